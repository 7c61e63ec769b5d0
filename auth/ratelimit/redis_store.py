"""The shared store (`redis://…`): each step is one Lua script, one round trip (EVALSHA).

Concurrent steps of one process are group-committed: one round trip takes everything that
gathered, settlements first (they free capacity), then lease renewals, then admissions, each
kind as one script run that handles its calls in order. Admissions and settlements share the round
trips because under load every request makes one of each: apart they need twice as many.
The scripts run on the limiter's own connection (`script_pipe`).

Scripts live next to this module as `.lua` files. Keys of one subject share the prefix
`<prefix><subject>:`. Scripts touch only the keys they are given, as Redis requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from auth.ratelimit.batching import GroupCommit
from auth.ratelimit.script_pipe import Script, ScriptCall, ScriptPipe
from auth.ratelimit.storage import (
    AdmitCall,
    AdmitResult,
    AdmitVerdict,
    MonthUsage,
    RawRefusal,
    RenewCall,
    ScopeState,
    SeedCall,
    SettleCall,
    StoreUnavailable,
)
from auth.ratelimit.types import LimitKind
from core.redis import no_maintenance_notifications, retry_once, use_hiredis_packing

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_CODES = {
    1: AdmitVerdict.ADMITTED,
    0: AdmitVerdict.REFUSED,
    2: AdmitVerdict.NEEDS_SEED,
    3: AdmitVerdict.DUPLICATE,
}


def _script(name: str) -> Script:
    source = files("auth.ratelimit").joinpath(name).read_text(encoding="utf-8")
    return Script(source, hashlib.sha1(source.encode()).hexdigest())


Step = AdmitCall | SettleCall | RenewCall


class RedisStorage:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sluicegate:rl:",
        timeout_s: float = 0.5,
        linger_s: float = 0.0,
        max_connections: int = 64,
        pool_timeout_s: float = 2.0,
    ) -> None:
        # A blocking pool: with a plain pool, a burst beyond max_connections fails with
        # "Too many connections", which would look like an outage and fail open.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            maint_notifications_config=no_maintenance_notifications(),
        )
        use_hiredis_packing(pool)  # a batch is hundreds of arguments: pack them in C
        # The client carries only idempotent commands (seeding is HSETNX, usage a read): a
        # connection error is retried once. The scripts go through `script_pipe`, which
        # never re-sends (a re-sent admit after a lost reply would reserve twice). The
        # timeouts bound how long a dead or hung store can hold a request up.
        self._client = aioredis.Redis(connection_pool=pool, retry=retry_once())
        self._prefix = prefix
        self._admit = _script("admit.lua")
        self._settle = _script("settle.lua")
        self._renew = _script("renew.lua")
        self._pipe = ScriptPipe(pool, timeout_s=timeout_s)
        # One round trip per admission or settlement at most; shared when calls overlap.
        self._steps: GroupCommit[Step, AdmitResult | bool | int] = GroupCommit(
            self._run_steps, fail_fast=(StoreUnavailable,), linger_s=linger_s
        )

    def _key(self, subject: str, name: str) -> str:
        return f"{self._prefix}{subject}:{name}"

    async def admit(self, call: AdmitCall) -> AdmitResult:
        result = await self._steps.submit(call)
        assert isinstance(result, AdmitResult)
        return result

    async def settle(self, call: SettleCall) -> bool:
        result = await self._steps.submit(call)
        assert isinstance(result, bool)
        return result

    async def renew(self, call: RenewCall) -> int:
        if not call.leases:
            return 0
        result = await self._steps.submit(call)
        assert isinstance(result, int) and not isinstance(result, bool)
        return result

    @property
    def round_trips(self) -> int:
        """Round trips the admissions and settlements have made so far."""
        return self._pipe.round_trips

    async def _run_steps(self, steps: Sequence[Step]) -> list[AdmitResult | bool | int]:
        settles = [s for s in steps if isinstance(s, SettleCall)]
        renewals = [s for s in steps if isinstance(s, RenewCall)]
        admits = [s for s in steps if isinstance(s, AdmitCall)]
        calls = []
        if settles:
            calls.append(self._settle_call(settles))
        calls += [self._renew_call(renewal) for renewal in renewals]
        if admits:
            calls.append(self._admit_call(admits))
        try:
            replies = await self._pipe.run(calls)
        except TimeoutError as exc:  # the pipe's own deadline: it carries no message
            raise StoreUnavailable(f"no reply within {self._pipe.timeout_s} s") from exc
        except _UNREACHABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        settled = iter([bool(reply) for reply in replies[0]] if settles else [])
        first_renewal = 1 if settles else 0
        renewed = iter(int(r) for r in replies[first_renewal : first_renewal + len(renewals)])
        admitted = iter([_parse_admit(reply) for reply in replies[-1]] if admits else [])
        results: list[AdmitResult | bool | int] = []
        for step in steps:
            if isinstance(step, SettleCall):
                results.append(next(settled))
            elif isinstance(step, RenewCall):
                results.append(next(renewed))
            else:
                results.append(next(admitted))
        return results

    def _admit_call(self, calls: Sequence[AdmitCall]) -> ScriptCall:
        keys: list[str] = []
        args: list[Any] = [len(calls)]
        for call in calls:
            args += [
                call.now_ms,
                call.window_ms,
                call.request_id,
                call.tokens,
                call.deadline_ms,
                call.month,
                call.month_reset_ms,
                call.keep_ms,
                int(call.seed_required),
                int(call.dry_run),
                len(call.scopes),
            ]
            for scope in call.scopes:
                keys += [
                    self._key(scope.subject, name)
                    for name in ("log", "weights", "slots", "bookings", f"month:{call.month}")
                ]
                args += scope.limits.as_tuple()
        return ScriptCall(self._admit, keys, args)

    def _settle_call(self, calls: Sequence[SettleCall]) -> ScriptCall:
        keys: list[str] = []
        args: list[Any] = [len(calls)]
        for call in calls:
            args += [call.request_id, call.actual_tokens, call.month, len(call.subjects)]
            for subject in call.subjects:
                keys += [
                    self._key(subject, name)
                    for name in ("weights", "slots", "bookings", f"month:{call.month}")
                ]
        return ScriptCall(self._settle, keys, args)

    def _renew_call(self, call: RenewCall) -> ScriptCall:
        keys: list[str] = []
        args: list[Any] = [call.deadline_ms, len(call.leases)]
        for lease in call.leases:
            args += [lease.request_id, len(lease.subjects)]
            keys += [self._key(subject, "slots") for subject in lease.subjects]
        return ScriptCall(self._renew, keys, args)

    async def seed_month(self, call: SeedCall) -> bool:
        key = self._key(call.subject, f"month:{call.month}")
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "used", call.used_tokens)
                pipe.pexpire(key, call.keep_ms)
                was_set, _ = await pipe.execute()
        except _UNREACHABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return bool(was_set)

    async def month_usage(self, subject: str, month: str) -> MonthUsage:
        try:
            used, reserved = await self._client.hmget(
                self._key(subject, f"month:{month}"), ["used", "reserved"]
            )
        except _UNREACHABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return MonthUsage(used=None if used is None else int(used), reserved=int(reserved or 0))

    async def aclose(self) -> None:
        await self._pipe.aclose()
        await self._client.aclose()


def _parse_admit(reply: list[Any]) -> AdmitResult:
    code, kind, scope, limit, used, retry_at, booked = reply[:7]
    outcome = _CODES[int(code)]
    flat = [int(v) for v in reply[7:]]
    states = tuple(
        ScopeState(
            requests=flat[i],
            window_tokens=flat[i + 1],
            newest_ms=None if flat[i + 2] < 0 else flat[i + 2],
            slots=flat[i + 3],
            month_tokens=None if flat[i + 4] < 0 else flat[i + 4],
        )
        for i in range(0, len(flat), 5)
    )
    refusal = None
    if outcome is AdmitVerdict.REFUSED:
        refusal = RawRefusal(
            kind=LimitKind(kind.decode() if isinstance(kind, bytes) else kind),
            scope=int(scope) - 1,
            limit=int(limit),
            used=int(used),
            retry_at_ms=None if int(retry_at) < 0 else int(retry_at),
        )
    seed_scope = int(scope) - 1 if outcome is AdmitVerdict.NEEDS_SEED else None
    return AdmitResult(outcome, states, refusal, seed_scope, bool(booked))
