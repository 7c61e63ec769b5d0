"""The Redis store's round trips: admissions and settlements share them, a script Redis has
forgotten is loaded again, and a call cut short never leaves its reply for the next one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from auth.ratelimit import LimitKind, Limits
from auth.ratelimit.limiter import Limiter
from auth.ratelimit.redis_store import RedisStorage
from auth.ratelimit.storage import AdmitCall, StoreUnavailable
from auth.ratelimit.types import Refusal, Reservation, Scope
from tests.auth.conftest import ThrowawayRedis

# Keeps Redis busy for 0.3 s: every other client waits for its reply meanwhile.
STALL = """
local t0 = redis.call('TIME')
repeat
  local t = redis.call('TIME')
until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 300000
return 1
"""
LIMITS = Limits(requests_per_minute=1000, tokens_per_minute=10**6, max_concurrent_requests=100)


async def test_admissions_and_settlements_share_round_trips(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStorage(redis_url, prefix=redis_prefix)
    limiter = Limiter(store)
    try:
        held = [
            await limiter.admit("acct", LIMITS, request_id=f"a{i}", tokens=10) for i in range(10)
        ]
        assert store.round_trips == 10  # one at a time: each goes alone, at once
        assert all(isinstance(r, Reservation) for r in held)
        settled, admitted = await asyncio.gather(
            asyncio.gather(*(limiter.settle(r, 4) for r in held if isinstance(r, Reservation))),
            asyncio.gather(
                *(limiter.admit("acct", LIMITS, request_id=f"b{i}", tokens=10) for i in range(10))
            ),
        )
        # The first settlement went alone; the other 19 calls, of both kinds, in one more.
        assert store.round_trips == 12
        assert settled == [True] * 10
        assert all(isinstance(r, Reservation) for r in admitted)
        state = await limiter.snapshot("acct", LIMITS)
        assert (state.requests, state.window_tokens, state.slots) == (20, 10 * 4 + 10 * 10, 10)
    finally:
        await limiter.aclose()


async def test_a_script_redis_forgot_is_loaded_again(started_redis: ThrowawayRedis) -> None:
    store = RedisStorage(started_redis.url, prefix="pipe:")
    limiter = Limiter(store)
    admin = aioredis.Redis.from_url(started_redis.url)
    try:
        first = await limiter.admit("acct", LIMITS, request_id="r1", tokens=5)
        assert isinstance(first, Reservation)
        await admin.script_flush()  # as after a restart: the server knows no scripts
        second = await limiter.admit("acct", LIMITS, request_id="r2", tokens=5)
        assert isinstance(second, Reservation)
        assert await limiter.settle(first, 1) and await limiter.settle(second, 2)
        state = await limiter.snapshot("acct", LIMITS)
        assert (state.requests, state.window_tokens, state.slots) == (2, 3, 0)
    finally:
        await admin.aclose()
        await limiter.aclose()


async def test_a_call_cut_short_leaves_no_reply_for_the_next(
    started_redis: ThrowawayRedis,
) -> None:
    store = RedisStorage(started_redis.url, prefix="pipe:", timeout_s=5)
    limiter = Limiter(store)
    admin = aioredis.Redis.from_url(started_redis.url)
    one_a_minute = Limits(requests_per_minute=1)
    try:
        assert isinstance(
            await limiter.admit("acct", one_a_minute, request_id="r1", tokens=0), Reservation
        )
        # Redis stalls; a caller gives up while its admission is on the wire.
        stall = asyncio.ensure_future(admin.eval(STALL, 0))
        await asyncio.sleep(0.05)
        cut = asyncio.ensure_future(limiter.admit("other", one_a_minute, request_id="r2", tokens=0))
        await asyncio.sleep(0.05)
        cut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cut
        await stall
        # The cut call's reply (an admission of "other") must not be read as this refusal.
        refused = await limiter.admit("acct", one_a_minute, request_id="r3", tokens=0)
        assert isinstance(refused, Refusal) and refused.kind is LimitKind.REQUESTS
    finally:
        await admin.aclose()
        await limiter.aclose()


async def test_a_stalled_store_is_reported_with_its_deadline(
    started_redis: ThrowawayRedis,
) -> None:
    store = RedisStorage(started_redis.url, prefix="pipe:", timeout_s=0.1)
    limiter = Limiter(store)
    admin = aioredis.Redis.from_url(started_redis.url)
    try:
        assert isinstance(
            await limiter.admit("acct", LIMITS, request_id="r1", tokens=0), Reservation
        )
        stall = asyncio.ensure_future(admin.eval(STALL, 0))
        await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable, match=r"no reply within 0\.1 s"):
            await store.admit(
                AdmitCall("r2", 0, (Scope("acct", LIMITS),), 0, 60_000, 1, "2026-01", 1, 1, False)
            )
        await stall
    finally:
        await admin.aclose()
        await limiter.aclose()


async def test_under_load_admissions_wait_to_share_a_round_trip(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStorage(redis_url, prefix=redis_prefix, linger_s=0.1)
    limiter = Limiter(store)

    async def admit(request_id: str, delay_s: float) -> Reservation | Refusal:
        await asyncio.sleep(delay_s)
        return await limiter.admit("acct", LIMITS, request_id=request_id, tokens=10)

    try:
        assert isinstance(await admit("alone", 0), Reservation)
        assert store.round_trips == 1  # alone: at once, no linger
        await asyncio.gather(*(admit(f"a{i}", 0) for i in range(3)))
        assert store.round_trips == 3  # one alone, two behind it: load
        # 30 ms apart, yet one round trip: the first waited for the second.
        admitted = await asyncio.gather(admit("b0", 0), admit("b1", 0.03))
        assert store.round_trips == 4
        assert all(isinstance(r, Reservation) for r in admitted)
        state = await limiter.snapshot("acct", LIMITS)
        assert (state.requests, state.slots) == (6, 6)
    finally:
        await limiter.aclose()
