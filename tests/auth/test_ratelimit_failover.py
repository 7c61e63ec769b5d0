"""The limiter when its Redis stops: fail open (per-process limits) or closed (503).

Each test starts its own throwaway `redis-server` and kills it; the shared one is untouched.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from auth.ratelimit import (
    FailureMode,
    Limiter,
    LimiterConfig,
    LimiterMetrics,
    LimitKind,
    Limits,
    Refusal,
    Reservation,
)
from auth.ratelimit.redis_store import RedisStorage
from core.errors import BackendUnavailable
from tests.auth.conftest import ThrowawayRedis


def failures(registry: CollectorRegistry, operation: str, mode: str) -> float:
    value = registry.get_sample_value(
        "sluicegate_ratelimit_store_failures_total", {"operation": operation, "mode": mode}
    )
    return value or 0.0


def limiter_on(server: ThrowawayRedis, mode: FailureMode, registry: CollectorRegistry) -> Limiter:
    config = LimiterConfig(failure_mode=mode, store_retry_s=0.2)
    store = RedisStorage(server.url, prefix="failover:", timeout_s=0.3)
    return Limiter(store, config=config, metrics=LimiterMetrics(registry))


async def test_fail_open_falls_back_to_per_process_limits(started_redis: ThrowawayRedis) -> None:
    registry = CollectorRegistry()
    limiter = limiter_on(started_redis, FailureMode.FAIL_OPEN, registry)
    limits = Limits(requests_per_minute=3, max_concurrent_requests=5)
    shared = await limiter.admit("acct_1", limits, request_id="r0", tokens=0)
    assert isinstance(shared, Reservation) and not shared.fallback
    started_redis.stop()

    first = await limiter.admit("acct_1", limits, request_id="r1", tokens=0)
    assert isinstance(first, Reservation) and first.fallback
    assert failures(registry, "admit", "fail_open") == 1
    # the fallback still limits, per process
    for i in range(2):
        assert isinstance(
            await limiter.admit("acct_1", limits, request_id=f"r{i + 2}", tokens=0), Reservation
        )
    refusal = await limiter.admit("acct_1", limits, request_id="r4", tokens=0)
    assert isinstance(refusal, Refusal) and refusal.kind is LimitKind.REQUESTS
    fallback_admissions = registry.get_sample_value(
        "sluicegate_ratelimit_fallback_admissions_total"
    )
    assert fallback_admissions == 3
    # settling a reservation held by the dead store never raises; it is counted
    assert await limiter.settle(shared, 0) is False
    assert failures(registry, "settle", "fail_open") == 1
    assert await limiter.settle(first, 0) is True  # the fallback's own booking
    await limiter.aclose()


async def test_fail_open_returns_to_the_shared_store(throwaway_redis: ThrowawayRedis) -> None:
    registry = CollectorRegistry()
    limiter = limiter_on(throwaway_redis, FailureMode.FAIL_OPEN, registry)  # not started yet
    limits = Limits(requests_per_minute=100)
    down = await limiter.admit("acct_1", limits, request_id="r1", tokens=0)
    assert isinstance(down, Reservation) and down.fallback
    throwaway_redis.start()
    await throwaway_redis.ready()
    await asyncio.sleep(0.25)  # past store_retry_s
    up = await limiter.admit("acct_1", limits, request_id="r2", tokens=0)
    assert isinstance(up, Reservation) and not up.fallback
    await limiter.aclose()


async def test_fail_closed_refuses_with_backend_unavailable(
    started_redis: ThrowawayRedis,
) -> None:
    registry = CollectorRegistry()
    limiter = limiter_on(started_redis, FailureMode.FAIL_CLOSED, registry)
    limits = Limits(requests_per_minute=3)
    assert isinstance(await limiter.admit("acct_1", limits, request_id="r0", tokens=0), Reservation)
    started_redis.stop()
    with pytest.raises(BackendUnavailable):
        await limiter.admit("acct_1", limits, request_id="r1", tokens=0)
    with pytest.raises(BackendUnavailable):  # inside store_retry_s: refused without waiting
        await limiter.admit("acct_1", limits, request_id="r2", tokens=0)
    assert failures(registry, "admit", "fail_closed") == 2
    await limiter.aclose()


async def test_a_burst_beyond_the_connection_pool_waits_instead_of_failing_open(
    redis_url: str, redis_prefix: str
) -> None:
    registry = CollectorRegistry()
    store = RedisStorage(redis_url, prefix=redis_prefix, max_connections=3)
    limiter = Limiter(store, metrics=LimiterMetrics(registry))
    limits = Limits(requests_per_minute=10)
    results = await asyncio.gather(
        *(limiter.admit("acct_1", limits, request_id=f"b{i}", tokens=0) for i in range(60))
    )
    admitted = [r for r in results if isinstance(r, Reservation)]
    assert len(admitted) == 10 and not any(r.fallback for r in admitted)
    assert failures(registry, "admit", "fail_open") == 0
    await limiter.aclose()
