"""The limiter's behaviour, one suite run against the memory store and real Redis."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from auth.ratelimit import (
    Limiter,
    LimiterConfig,
    LimitKind,
    Limits,
    Refusal,
    Reservation,
    Scope,
    month_of,
)
from auth.ratelimit.memory import MemoryStorage
from auth.ratelimit.redis_store import RedisStorage
from auth.ratelimit.storage import Storage

T0 = datetime(2024, 6, 15, 12, 0, tzinfo=UTC).timestamp()
_ids = itertools.count()


def rid() -> str:
    return f"req_{next(_ids)}"


class Clock:
    """An injectable clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeLimiter = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    """Builds limiters over one store; with Redis each limiter is a separate client (replica)."""
    made: list[Limiter] = []
    prefix = ""
    if request.param == "redis":
        url = str(request.getfixturevalue("redis_url"))
        prefix = str(request.getfixturevalue("redis_prefix"))
    memory = MemoryStorage()

    def build(**kwargs: object) -> Limiter:
        store: Storage = memory if request.param == "memory" else RedisStorage(url, prefix=prefix)
        limiter = Limiter(store, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.aclose()
    if request.param == "redis":
        client = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(make_limiter: MakeLimiter, clock: Clock) -> Limiter:
    return make_limiter(clock=clock)


async def admit(
    limiter: Limiter, limits: Limits, tokens: int = 0, subject: str = "acct_1", **kw: object
) -> Reservation | Refusal:
    return await limiter.admit(subject, limits, request_id=rid(), tokens=tokens, **kw)  # type: ignore[arg-type]


def refused(result: Reservation | Refusal, kind: LimitKind) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.kind is kind, result
    return result


async def test_requests_window_is_exact_over_a_rolling_minute(
    limiter: Limiter, clock: Clock
) -> None:
    limits = Limits(requests_per_minute=3)
    for _ in range(3):
        assert isinstance(await admit(limiter, limits), Reservation)
        clock.advance(10)
    refusal = refused(await admit(limiter, limits), LimitKind.REQUESTS)
    assert (refusal.limit, refusal.used, refusal.requested) == (3, 3, 1)
    clock.now = T0 + 59.999  # the first request is still inside the window
    refused(await admit(limiter, limits), LimitKind.REQUESTS)
    clock.now = T0 + 60  # ... and now it is not
    assert isinstance(await admit(limiter, limits), Reservation)
    refused(await admit(limiter, limits), LimitKind.REQUESTS)


async def test_no_double_burst_at_a_window_edge(limiter: Limiter, clock: Clock) -> None:
    limits = Limits(requests_per_minute=10)
    clock.now = T0 + 59.9  # the end of a fixed minute [T0, T0+60)
    for _ in range(10):
        assert isinstance(await admit(limiter, limits), Reservation)
    clock.now = T0 + 60.1  # a fixed window would start a fresh 10 here
    refusal = refused(await admit(limiter, limits), LimitKind.REQUESTS)
    assert refusal.retry_after_s == pytest.approx(59.8)


async def test_refused_request_reserves_nothing(limiter: Limiter, clock: Clock) -> None:
    limits = Limits(requests_per_minute=2, tokens_per_minute=100, tokens_per_month=1000)
    assert isinstance(await admit(limiter, limits, tokens=60), Reservation)
    # passes the request limit but not the token limit: neither may be charged
    refused(await admit(limiter, limits, tokens=50), LimitKind.TOKENS)
    status = await limiter.status("acct_1", limits)
    assert (status.remaining_requests, status.remaining_tokens) == (1, 40)
    usage = await limiter.month_usage("acct_1", month_of(clock.now))
    assert (usage.used, usage.reserved) == (0, 60)
    assert isinstance(await admit(limiter, limits, tokens=40), Reservation)


async def test_a_key_scope_refusing_leaves_the_account_untouched(limiter: Limiter) -> None:
    account = Limits(requests_per_minute=5)
    key = Scope("key_a", Limits(requests_per_minute=1))
    assert isinstance(await admit(limiter, account, extra=[key]), Reservation)
    refusal = refused(await admit(limiter, account, extra=[key]), LimitKind.REQUESTS)
    assert refusal.subject == "key_a"
    status = await limiter.status("acct_1", account)
    assert status.remaining_requests == 4
    # another key of the same account still has the account's remaining capacity
    for _ in range(4):
        assert isinstance(
            await admit(limiter, account, extra=[Scope("key_b", Limits())]), Reservation
        )
    refused(await admit(limiter, account), LimitKind.REQUESTS)


async def test_tpm_never_exceeded_by_concurrent_admissions(
    make_limiter: MakeLimiter, clock: Clock
) -> None:
    # two limiters: with Redis they are two clients, like two gateway replicas
    replicas = [make_limiter(clock=clock), make_limiter(clock=clock)]
    limits = Limits(tokens_per_minute=1000)

    async def one(i: int) -> Reservation | Refusal:
        return await admit(replicas[i % 2], limits, tokens=100)

    results = await asyncio.gather(*(one(i) for i in range(20)))
    admitted = [r for r in results if isinstance(r, Reservation)]
    assert len(admitted) == 10
    assert all(refused(r, LimitKind.TOKENS).used == 1000 for r in results if r not in admitted)
    status = await replicas[0].status("acct_1", limits)
    assert status.remaining_tokens == 0


async def test_settle_refunds_and_is_idempotent(limiter: Limiter, clock: Clock) -> None:
    limits = Limits(tokens_per_minute=1000, tokens_per_month=10_000)
    reservation = await admit(limiter, limits, tokens=300)
    assert isinstance(reservation, Reservation)
    month = month_of(clock.now)
    assert (await limiter.month_usage("acct_1", month)).reserved == 300
    assert await limiter.settle(reservation, 120) is True
    assert (await limiter.status("acct_1", limits)).remaining_tokens == 880
    usage = await limiter.month_usage("acct_1", month)
    assert (usage.used, usage.reserved) == (120, 0)
    assert await limiter.settle(reservation, 120) is False  # a retried settle changes nothing
    assert await limiter.settle(reservation, 999) is False
    assert (await limiter.status("acct_1", limits)).remaining_tokens == 880
    usage = await limiter.month_usage("acct_1", month)
    assert (usage.used, usage.reserved) == (120, 0)


async def test_concurrency_slots(limiter: Limiter) -> None:
    limits = Limits(max_concurrent_requests=2)
    first, second = await admit(limiter, limits), await admit(limiter, limits)
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    refusal = refused(await admit(limiter, limits), LimitKind.CONCURRENCY)
    assert (refusal.limit, refusal.used) == (2, 2)
    assert refusal.retry_after_s == pytest.approx(1.0)
    await limiter.settle(first, 0)
    assert isinstance(await admit(limiter, limits), Reservation)
    refused(await admit(limiter, limits), LimitKind.CONCURRENCY)


async def test_a_lease_nobody_renews_expires(make_limiter: MakeLimiter, clock: Clock) -> None:
    limiter = make_limiter(clock=clock, config=LimiterConfig(slot_lease_s=5))
    limits = Limits(max_concurrent_requests=1, tokens_per_month=1000)
    leaked = await admit(limiter, limits, tokens=400)  # its process "crashes": never settled
    await limiter.leases.aclose()  # ... and stops renewing (in real time it would not, yet)
    assert isinstance(leaked, Reservation)
    clock.advance(4.9)
    refused(await admit(limiter, limits), LimitKind.CONCURRENCY)
    clock.advance(0.1)
    late = await admit(limiter, limits, tokens=100)
    assert isinstance(late, Reservation)
    usage = await limiter.month_usage("acct_1", month_of(clock.now))
    assert (usage.used, usage.reserved) == (0, 100)  # the leaked 400 went back
    assert await limiter.settle(leaked, 400) is False  # too late: nothing to settle


async def test_month_quota_crossing_and_rollover(limiter: Limiter, clock: Clock) -> None:
    clock.now = datetime(2024, 1, 31, 23, 59, 0, tzinfo=UTC).timestamp()
    limits = Limits(tokens_per_month=1000)
    first = await admit(limiter, limits, tokens=600)
    assert isinstance(first, Reservation)
    await limiter.settle(first, 600)
    refusal = refused(await admit(limiter, limits, tokens=500), LimitKind.MONTH)
    assert (refusal.limit, refusal.used, refusal.requested) == (1000, 600, 500)
    assert refusal.retry_after_s == pytest.approx(60)  # February starts in a minute
    assert isinstance(await admit(limiter, limits, tokens=400), Reservation)  # exactly 1000
    clock.now = datetime(2024, 2, 1, tzinfo=UTC).timestamp()
    assert isinstance(await admit(limiter, limits, tokens=500), Reservation)
    assert (await limiter.month_usage("acct_1", "2024-02")).reserved == 500
    january = await limiter.month_usage("acct_1", "2024-01")
    assert (january.used, january.reserved) == (600, 400)


async def test_settle_after_rollover_charges_the_month_it_reserved(
    limiter: Limiter, clock: Clock
) -> None:
    clock.now = datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    limits = Limits(tokens_per_month=1000)
    reservation = await admit(limiter, limits, tokens=300)
    assert isinstance(reservation, Reservation)
    clock.advance(2)
    await limiter.settle(reservation, 200)
    january = await limiter.month_usage("acct_1", "2024-01")
    assert (january.used, january.reserved) == (200, 0)
    assert (await limiter.month_usage("acct_1", "2024-02")).used is None


async def test_month_seeded_once_from_the_ledger(make_limiter: MakeLimiter, clock: Clock) -> None:
    asked: list[tuple[str, str]] = []

    async def ledger(subject: str, month: str) -> int:
        asked.append((subject, month))
        return 900

    replicas = [make_limiter(clock=clock, month_usage=ledger) for _ in range(2)]
    limits = Limits(tokens_per_month=1000)
    first = await admit(replicas[0], limits, tokens=50)
    assert isinstance(first, Reservation)
    month = month_of(clock.now)
    assert asked == [("acct_1", month)]
    refused(await admit(replicas[1], limits, tokens=100), LimitKind.MONTH)  # 900 + 50 + 100
    assert len(asked) == 1  # the counter is shared: the second replica does not ask
    # seeding again never adds, whatever the value
    assert await replicas[1].seed_month("acct_1", month, 900) is False
    assert await replicas[1].seed_month("acct_1", month, 5) is False
    usage = await replicas[0].month_usage("acct_1", month)
    assert (usage.used, usage.reserved) == (900, 50)


async def test_seed_month_is_set_if_absent(limiter: Limiter, clock: Clock) -> None:
    month = month_of(clock.now)
    assert await limiter.seed_month("acct_2", month, 700) is True
    assert await limiter.seed_month("acct_2", month, 700) is False
    usage = await limiter.month_usage("acct_2", month)
    assert (usage.used, usage.reserved) == (700, 0)
    refused(await admit(limiter, Limits(tokens_per_month=1000), 301, "acct_2"), LimitKind.MONTH)


@pytest.mark.parametrize(
    ("limits", "earlier", "tokens", "kind"),
    [
        (Limits(requests_per_minute=3), [0, 0, 0], 0, LimitKind.REQUESTS),
        (Limits(tokens_per_minute=1000), [400, 300, 200], 500, LimitKind.TOKENS),
    ],
)
async def test_waiting_retry_after_then_retrying_is_admitted(
    limiter: Limiter, clock: Clock, limits: Limits, earlier: list[int], tokens: int, kind: LimitKind
) -> None:
    for spend in earlier:
        assert isinstance(await admit(limiter, limits, tokens=spend), Reservation)
        clock.advance(7.3)
    refusal = refused(await admit(limiter, limits, tokens=tokens), kind)
    assert refusal.retry_after_s is not None and refusal.retry_after_s > 0
    start = clock.now
    clock.now = start + refusal.retry_after_s - 0.002  # a moment too early
    refused(await admit(limiter, limits, tokens=tokens), kind)
    clock.now = start + refusal.retry_after_s
    assert isinstance(await admit(limiter, limits, tokens=tokens), Reservation)


async def test_request_larger_than_a_limit_never_fits(limiter: Limiter) -> None:
    refusal = refused(await admit(limiter, Limits(tokens_per_minute=100), 101), LimitKind.TOKENS)
    assert refusal.retry_after_s is None
    refusal = refused(await admit(limiter, Limits(tokens_per_month=100), 101), LimitKind.MONTH)
    assert refusal.retry_after_s is None


async def test_status_numbers_for_headers(limiter: Limiter, clock: Clock) -> None:
    limits = Limits(requests_per_minute=60, tokens_per_minute=1000)
    assert isinstance(await admit(limiter, limits, tokens=250), Reservation)
    clock.advance(15)
    reservation = await admit(limiter, limits, tokens=100)
    assert isinstance(reservation, Reservation)
    status = reservation.status
    assert (status.limit_requests, status.remaining_requests) == (60, 58)
    assert (status.limit_tokens, status.remaining_tokens) == (1000, 650)
    assert status.reset_requests_s == pytest.approx(60)
    clock.advance(30)
    later = await limiter.status("acct_1", limits)
    assert later.remaining_requests == 58
    assert later.reset_tokens_s == pytest.approx(30)
    unlimited = await limiter.status("acct_1", Limits())
    assert unlimited.limit_requests is None and unlimited.limit_tokens is None


async def test_requests_only_limit_books_nothing_to_settle(limiter: Limiter) -> None:
    reservation = await admit(limiter, Limits(requests_per_minute=5), subject="ip:10.0.0.1")
    assert isinstance(reservation, Reservation)
    assert reservation.booked is False
    assert await limiter.settle(reservation, 0) is False


async def test_duplicate_request_id_is_rejected(limiter: Limiter) -> None:
    limits = Limits(max_concurrent_requests=5)
    await limiter.admit("acct_1", limits, request_id="req_same", tokens=1)
    with pytest.raises(ValueError, match="already admitted"):
        await limiter.admit("acct_1", limits, request_id="req_same", tokens=1)


async def test_replicas_share_one_request_window(make_limiter: MakeLimiter, clock: Clock) -> None:
    replicas = [make_limiter(clock=clock) for _ in range(3)]
    limits = Limits(requests_per_minute=7)

    async def one(i: int) -> Reservation | Refusal:
        return await admit(replicas[i % 3], limits)

    results = await asyncio.gather(*(one(i) for i in range(30)))
    assert sum(isinstance(r, Reservation) for r in results) == 7


async def test_retry_after_never_exceeds_the_window_under_clock_skew(limiter: Limiter) -> None:
    limits = Limits(requests_per_minute=1)
    # another replica read its clock half a second after ours, but reached the store first
    assert isinstance(await admit(limiter, limits, now=T0 + 0.5), Reservation)
    refusal = refused(await admit(limiter, limits, now=T0), LimitKind.REQUESTS)
    assert refusal.retry_after_s == 60
    assert refusal.status.reset_requests_s == 60
