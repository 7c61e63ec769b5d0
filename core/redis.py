"""Redis clients: the app's shared client, and connections that pack commands in C.

Faults. Every client here waits at most `timeout_s` to connect or for a reply, so a Redis
that hangs (stopped, not dead) costs a request that much and then looks like one that is
down. After Redis restarts, a pooled connection that was open when it died must not fail
the next command: the pool checks a connection it hands out for a closed socket and
reconnects, and idempotent commands are retried once on a connection
error. (redis-py 8.1 skips that check while maintenance notifications are in their default
"auto" mode, even on RESP2 where there are none: every connection open across a restart
then failed once, so `no_maintenance_notifications` turns them off.)

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
client always packs them in Python (redis/redis-py#4176, open as of redis-py 8.1). For the
limiter's batched scripts (hundreds of arguments per call) that packing was about a fifth
of what rate limits cost the gateway per request. `use_hiredis_packing(pool)` swaps the
pool's connection class for a subclass that packs with redis-py's own hiredis serializer.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig
from redis.utils import HIREDIS_AVAILABLE


class _HiredisPacking:
    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING_CLASSES: dict[type, type] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def use_hiredis_packing(pool: ConnectionPool | BlockingConnectionPool) -> None:
    """Make new connections of `pool` pack commands with hiredis (when it is installed)."""
    if HIREDIS_AVAILABLE:
        pool.connection_class = _PACKING_CLASSES.get(pool.connection_class, pool.connection_class)


def no_maintenance_notifications() -> MaintNotificationsConfig:
    """Off, so the pool's stale-connection check runs (see the module docstring)."""
    return MaintNotificationsConfig(enabled=False)


def retry_once() -> Retry:
    """For idempotent commands: one more try, soon, after a connection error (not a timeout:
    a Redis that does not answer would only make the caller wait twice)."""
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), 1, (RedisConnectionError,))


def redis_client(url: str, *, timeout_s: float = 0.5) -> Redis:
    """The app's general-purpose client (text replies); the limiter keeps its own pool.

    Its commands (the key-cache version's GET and INCR, PING) are safe to repeat.
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry_once(),
        maint_notifications_config=no_maintenance_notifications(),
    )
