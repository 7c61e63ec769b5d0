"""Leases: a live request keeps its slot however long it runs; a dead process's slots are
free within the lease; a settle lost to a Redis timeout is retried (and bounded anyway).

The process deaths are real: a separate Python process holds a slot in Redis and is killed
with SIGKILL. The Redis that is stopped (SIGSTOP) is a throwaway of the test's own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auth.ratelimit import Limiter, LimiterConfig, LimitKind, Limits, Refusal, Reservation
from auth.ratelimit.memory import MemoryStorage
from auth.ratelimit.redis_store import RedisStorage
from auth.ratelimit.storage import Storage
from tests.auth.conftest import ThrowawayRedis

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 1.0
ONE_SLOT = Limits(max_concurrent_requests=1)
_ids = iter(range(1_000_000))

# A gateway process reduced to its limiter: hold one slot, renew its lease, never settle.
HOLDER = """
import asyncio, sys
from auth.ratelimit import Limiter, LimiterConfig, Limits, Reservation
from auth.ratelimit.redis_store import RedisStorage

async def main():
    url, prefix, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    limiter = Limiter(RedisStorage(url, prefix=prefix), config=LimiterConfig(slot_lease_s=lease))
    held = await limiter.admit(
        "acct_1", Limits(max_concurrent_requests=1), request_id="held", tokens=10
    )
    assert isinstance(held, Reservation), held
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def admit(limiter: Limiter, limits: Limits = ONE_SLOT) -> Reservation | Refusal:
    return await limiter.admit("acct_1", limits, request_id=f"r{next(_ids)}", tokens=10)


async def refused_throughout(limiter: Limiter, seconds: float) -> None:
    """The slot stays taken for `seconds` (checked every 0.1 s)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        result = await admit(limiter)
        assert isinstance(result, Refusal) and result.kind is LimitKind.CONCURRENCY, result
        await asyncio.sleep(0.1)


async def seconds_until_admitted(limiter: Limiter, limit_s: float) -> float:
    started = time.monotonic()
    while True:
        result = await admit(limiter)
        waited = time.monotonic() - started
        if isinstance(result, Reservation):
            await limiter.settle(result, 0)
            return waited
        assert waited < limit_s, f"the slot was still held after {waited:.1f} s"
        await asyncio.sleep(0.05)


@pytest.fixture(params=["memory", "redis"])
async def shared_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Storage, Storage]]:
    """Two handles on one store: two processes' views (one memory store, or two clients)."""
    if request.param == "memory":
        memory = MemoryStorage()
        yield memory, memory
        return
    url = str(request.getfixturevalue("redis_url"))
    prefix = str(request.getfixturevalue("redis_prefix"))
    first, second = RedisStorage(url, prefix=prefix), RedisStorage(url, prefix=prefix)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_a_live_request_keeps_its_slot_and_a_stopped_one_frees_it_within_the_lease(
    shared_store: tuple[Storage, Storage],
) -> None:
    config = LimiterConfig(slot_lease_s=LEASE_S)
    holder = Limiter(shared_store[0], config=config)
    other = Limiter(shared_store[1], config=config)
    held = await admit(holder)
    assert isinstance(held, Reservation)
    await refused_throughout(other, 3 * LEASE_S)  # renewed: never released early
    assert holder.leases.held == 1
    await holder.leases.aclose()  # the process stops renewing, as if it had died
    assert await seconds_until_admitted(other, LEASE_S + 1.0) <= LEASE_S + 0.3
    await other.leases.aclose()


async def test_a_killed_process_frees_its_slot_within_the_lease(
    redis_url: str, redis_prefix: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", HOLDER, redis_url, redis_prefix, str(LEASE_S)]
    holder = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    store = RedisStorage(redis_url, prefix=redis_prefix)
    limiter = Limiter(store, config=LimiterConfig(slot_lease_s=LEASE_S))
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 60)
        assert line.strip() == b"held"
        await refused_throughout(limiter, 3 * LEASE_S)  # alive and renewing: kept
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert await seconds_until_admitted(limiter, LEASE_S + 1.0) <= LEASE_S + 0.3
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        await limiter.aclose()


async def test_a_settle_lost_to_a_hung_redis_is_retried_and_frees_the_slot(
    started_redis: ThrowawayRedis,
) -> None:
    store = RedisStorage(started_redis.url, prefix="leases:", timeout_s=0.2)
    limiter = Limiter(store, config=LimiterConfig(slot_lease_s=LEASE_S, store_retry_s=0.1))
    limits = Limits(max_concurrent_requests=1, tokens_per_month=1000)
    held = await admit(limiter, limits)
    assert isinstance(held, Reservation)
    assert started_redis.process is not None
    started_redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert await limiter.settle(held, 7) is False  # no reply within the timeout
        assert time.monotonic() - started < 0.5
        assert limiter.leases.unsettled == 1
    finally:
        started_redis.process.send_signal(signal.SIGCONT)
    # The retry lands with the next renewal round: the slot is free and the month charged
    # the actual 7 tokens (an expired lease would have released the 10 reserved instead).
    deadline = time.monotonic() + LEASE_S
    while limiter.leases.unsettled and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert limiter.leases.unsettled == 0
    usage = await limiter.month_usage("acct_1", held.month)
    assert (usage.used, usage.reserved) == (7, 0)
    assert isinstance(await admit(limiter, limits), Reservation)
    await limiter.aclose()


async def test_a_settle_that_never_lands_still_frees_the_slot_within_the_lease(
    started_redis: ThrowawayRedis,
) -> None:
    store = RedisStorage(started_redis.url, prefix="leases:", timeout_s=0.2)
    limiter = Limiter(store, config=LimiterConfig(slot_lease_s=LEASE_S, store_retry_s=0.1))
    held = await admit(limiter)
    assert isinstance(held, Reservation)
    assert started_redis.process is not None
    started_redis.process.send_signal(signal.SIGSTOP)
    try:
        assert await limiter.settle(held, 7) is False
        await asyncio.sleep(LEASE_S + 0.2)  # every retry meanwhile timed out
    finally:
        started_redis.process.send_signal(signal.SIGCONT)
    assert limiter.leases.held == 0
    assert isinstance(await admit(limiter), Reservation)  # the lease ran out: released
    await limiter.aclose()
