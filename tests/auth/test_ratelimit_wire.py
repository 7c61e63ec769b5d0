"""What clients see of the limiter: durations, headers, typed errors; and small pieces."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from auth.ratelimit import (
    Limiter,
    LimitKind,
    Limits,
    RateLimitStatus,
    Refusal,
    Reservation,
    format_duration,
    month_of,
    next_month_start,
    rate_limit_headers,
    refusal_error,
    reservation_tokens,
    storage_from_url,
)
from auth.ratelimit.memory import MemoryStorage
from auth.ratelimit.redis_store import RedisStorage
from core.errors import InvalidRequest, QuotaExceeded, RateLimited


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.012, "12ms"),
        (0.0121, "13ms"),  # rounded up: waiting this long is never early
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (9.8, "9.8s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.25, "1m30.25s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (-3, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_months_are_utc_calendar_months() -> None:
    last_second = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert month_of(last_second) == "2024-12"
    assert month_of(last_second + 1) == "2025-01"
    assert next_month_start(last_second) == last_second + 1
    feb = datetime(2024, 2, 10, tzinfo=UTC).timestamp()
    assert next_month_start(feb) == datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    # Cached per UTC hour: every instant around each month boundary of two years, and
    # fractions of a second on either side, agree with the calendar computed directly.
    for year in (2024, 2025):
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=UTC).timestamp()
            for now in (start - 3600.5, start - 0.001, start, start + 0.001, start + 3599.9):
                moment = datetime.fromtimestamp(now, UTC)
                following = datetime(
                    moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC
                )
                assert month_of(now) == moment.strftime("%Y-%m"), now
                assert next_month_start(now) == following.timestamp(), now


def test_reservation_tokens_counts_every_sequence() -> None:
    assert reservation_tokens(prompt_tokens=10, max_tokens=16) == 26
    assert reservation_tokens(prompt_tokens=10, max_tokens=16, n=2, best_of=5) == 90
    assert reservation_tokens(prompt_tokens=10, max_tokens=16, n=3) == 58


def test_limits_reject_negative_values() -> None:
    with pytest.raises(ValueError):
        Limits(requests_per_minute=-1)
    assert Limits(tokens_per_minute=0).as_tuple() == (0, 0, 0, 0)


STATUS = RateLimitStatus(
    limit_requests=60,
    remaining_requests=0,
    reset_requests_s=9.8,
    limit_tokens=1000,
    remaining_tokens=150,
    reset_tokens_s=0.012,
)


def test_headers() -> None:
    assert rate_limit_headers(STATUS) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "9.8s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "150",
        "x-ratelimit-reset-tokens": "12ms",
    }
    assert rate_limit_headers(RateLimitStatus()) == {}


def refusal(kind: LimitKind, retry: float | None, requested: int = 1) -> Refusal:
    return Refusal(kind, "acct_1", 60, 60, requested, retry, STATUS)


def test_request_limit_becomes_rate_limited_requests() -> None:
    error = refusal_error(refusal(LimitKind.REQUESTS, 9.8))
    assert isinstance(error, RateLimited)
    assert (error.limit_type, error.code, error.retry_after_s) == (
        "requests",
        "rate_limit_exceeded",
        9.8,
    )
    assert error.message == (
        "Rate limit reached for requests per minute (RPM) on acct_1: "
        "Limit 60, Used 60, Requested 1. Please try again in 9.8s."
    )
    assert error.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_and_concurrency_limits() -> None:
    tokens = refusal_error(refusal(LimitKind.TOKENS, 2.5, requested=100))
    assert isinstance(tokens, RateLimited) and tokens.limit_type == "tokens"
    assert "tokens per minute (TPM)" in tokens.message and "Requested 100" in tokens.message
    concurrency = refusal_error(refusal(LimitKind.CONCURRENCY, 1.0))
    assert isinstance(concurrency, RateLimited) and concurrency.limit_type == "requests"
    assert concurrency.message.startswith("Too many concurrent requests on acct_1")


def test_month_quota_becomes_insufficient_quota() -> None:
    now = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)
    error = refusal_error(refusal(LimitKind.MONTH, 3600, requested=500), now=now)
    assert isinstance(error, QuotaExceeded)
    assert error.code == "insufficient_quota" and error.retry_after_s == 3600
    assert "renews at 2024-02-01T00:00:00Z" in error.message


def test_request_that_can_never_fit_is_a_bad_request() -> None:
    error = refusal_error(refusal(LimitKind.TOKENS, None, requested=5000))
    assert isinstance(error, InvalidRequest)
    assert (error.param, error.code) == ("max_tokens", "request_too_large")


def test_storage_from_url(redis_url: str) -> None:
    assert isinstance(storage_from_url("memory://"), MemoryStorage)
    assert isinstance(storage_from_url(redis_url, prefix="x:"), RedisStorage)
    with pytest.raises(ValueError, match="unsupported"):
        storage_from_url("memcached://localhost")


async def test_bad_request_ids_are_refused() -> None:
    limiter = Limiter(MemoryStorage())
    for bad in ("", "#total"):
        with pytest.raises(ValueError):
            await limiter.admit("acct_1", Limits(), request_id=bad, tokens=1)


async def test_memory_store_forgets_idle_subjects() -> None:
    store = MemoryStorage()
    limiter = Limiter(store)
    t = datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    for i in range(50):
        result = await limiter.admit(
            f"ip:10.0.0.{i}", Limits(requests_per_minute=1), request_id=f"w{i}", tokens=0, now=t
        )
        assert isinstance(result, Reservation)
    # two sweeps later every window entry has expired and the subjects are gone
    await limiter.admit("ip:x", Limits(requests_per_minute=1), request_id="a", tokens=0, now=t + 61)
    await limiter.admit(
        "ip:x", Limits(requests_per_minute=1), request_id="b", tokens=0, now=t + 122
    )
    assert len(store._subjects) == 1
