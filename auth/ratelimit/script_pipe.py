"""The limiter's own Redis connection: one round trip runs one or more scripts, pipelined.

Every admission and settlement is a script call, on every request. Through redis-py's client
each call also took a connection from the pool (a condition and a timeout), ran a retry
wrapper, sent under `asyncio.wait_for` (a task per send) and recorded observability data:
more client CPU than packing and parsing the call itself. Here the group commit in front
(`batching.GroupCommit`) already allows only one round trip at a time, so a single
connection serves it with no pool, one deadline per round trip, and commands packed by
hiredis (`core.redis`).

A round trip writes every call's EVALSHA at once and reads the replies in order. A script
Redis does not know yet (NOSCRIPT: it ran nothing) is loaded and called again. Anything else
that goes wrong mid-way (timeout, connection lost, cancelled caller) may leave replies in
flight, so the connection is dropped and the next round trip opens a new one.

Before a round trip reuses the connection, it is checked for a closed socket (or bytes
nobody asked for): a Redis that restarted since the last round trip closed it, and sending
on it would fail a round trip that nothing is wrong with any more. Calls are never re-sent
after they went out (an admission whose reply was lost may have reserved), so this check,
made before sending, is what keeps a restart from costing a failed round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hiredis import pack_command
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: Sequence[str]
    args: Sequence[Any]


class ScriptPipe:
    """Runs batches of script calls on one connection made like `pool`'s (one at a time)."""

    def __init__(self, pool: BlockingConnectionPool, *, timeout_s: float) -> None:
        self._pool = pool
        self.timeout_s = timeout_s
        self._connection: AbstractConnection | None = None
        self.round_trips = 0

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, in order; a script error reply is raised as `ResponseError`."""
        connection = await self._usable_connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._round_trip(connection, calls)
                unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if unknown:  # Redis restarted or flushed its scripts: none of these ran
                    await self._load(connection, {calls[i].script for i in unknown})
                    again = await self._round_trip(connection, [calls[i] for i in unknown])
                    for i, reply in zip(unknown, again, strict=True):
                        replies[i] = reply
        except BaseException:
            self._connection = None
            await connection.disconnect(nowait=True)
            raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()
            self._connection = None

    async def _usable_connection(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:
            return self._connect()
        try:
            stale = connection.is_connected and await connection.can_read()
        except (RedisConnectionError, OSError):  # closed either way
            stale = True
        if stale:
            self._connection = None
            await connection.disconnect(nowait=True)
            return self._connect()
        return connection

    def _connect(self) -> AbstractConnection:
        # The pool's settings (URL, TLS, packing class), with no per-operation socket
        # timeout: `run` puts one deadline around the whole round trip instead.
        kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
        self._connection = self._pool.connection_class(**kwargs)
        return self._connection

    async def _round_trip(
        self, connection: AbstractConnection, calls: Sequence[ScriptCall]
    ) -> list[Any]:
        commands = [
            ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args) for call in calls
        ]
        # Our arguments are str, int and bytes only, which hiredis packs as they are
        # (redis-py's own hiredis path first re-checks every argument in Python).
        await connection.send_packed_command(b"".join(map(pack_command, commands)))
        self.round_trips += 1
        replies: list[Any] = []
        for _ in calls:
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:  # an error reply; the replies after it still come
                replies.append(error)
        return replies

    async def _load(self, connection: AbstractConnection, scripts: set[Script]) -> None:
        for script in scripts:
            await connection.send_command("SCRIPT", "LOAD", script.source)
            await connection.read_response()
