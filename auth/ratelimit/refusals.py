"""Refusals and limiter status as the client sees them: typed errors and `x-ratelimit-*`.

The one place where a `Refusal` becomes `RateLimited`, `QuotaExceeded` or (for a request
that can never fit) `InvalidRequest`; `api/errors.py` turns those into HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from auth.ratelimit.periods import format_duration
from auth.ratelimit.types import LimitKind, RateLimitStatus, Refusal
from core.errors import InvalidRequest, QuotaExceeded, RateLimited

_WHAT = {
    LimitKind.REQUESTS: "requests per minute (RPM)",
    LimitKind.TOKENS: "tokens per minute (TPM)",
    LimitKind.CONCURRENCY: "concurrent requests",
    LimitKind.MONTH: "tokens per month",
}


def rate_limit_headers(status: RateLimitStatus) -> dict[str, str]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limited dimensions."""
    headers: dict[str, str] = {}
    for name, limit, remaining, reset in (
        ("requests", status.limit_requests, status.remaining_requests, status.reset_requests_s),
        ("tokens", status.limit_tokens, status.remaining_tokens, status.reset_tokens_s),
    ):
        if limit is None or remaining is None or reset is None:
            continue
        headers[f"x-ratelimit-limit-{name}"] = str(limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
        headers[f"x-ratelimit-reset-{name}"] = format_duration(reset)
    return headers


def refusal_error(
    refusal: Refusal, *, now: datetime | None = None
) -> RateLimited | QuotaExceeded | InvalidRequest:
    what = _WHAT[refusal.kind]
    if refusal.retry_after_s is None:
        # Larger than the limit itself: waiting never helps, so not a (retried) 429.
        return InvalidRequest(
            f"Request too large for {what} on {refusal.subject}: Limit {refusal.limit}, "
            f"Requested {refusal.requested}. Reduce the prompt or max_tokens.",
            param="max_tokens",
            code="request_too_large",
        )
    counts = f"Limit {refusal.limit}, Used {refusal.used}, Requested {refusal.requested}."
    headers = rate_limit_headers(refusal.status)
    if refusal.kind is LimitKind.MONTH:
        resets = (now or datetime.now(UTC)) + timedelta(seconds=refusal.retry_after_s)
        return QuotaExceeded(
            f"You exceeded your monthly token quota on {refusal.subject}: {counts} "
            f"It renews at {resets:%Y-%m-%dT%H:%M:%SZ}.",
            retry_after_s=refusal.retry_after_s,
            headers=headers,
        )
    reached = "Too many" if refusal.kind is LimitKind.CONCURRENCY else "Rate limit reached for"
    limit_type = "tokens" if refusal.kind is LimitKind.TOKENS else "requests"
    return RateLimited(
        f"{reached} {what} on {refusal.subject}: {counts} "
        f"Please try again in {format_duration(refusal.retry_after_s)}.",
        limit_type=limit_type,
        retry_after_s=refusal.retry_after_s,
        headers=headers,
    )
