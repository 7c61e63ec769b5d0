"""Rate limits in the request path: the limiter built from settings, admission for the
generation pipeline (`api.generation.hooks.Admitter`), the per-IP waitlist guard, and
`x-ratelimit-*` headers on every authenticated response.

The domain (`auth.ratelimit`) knows nothing of HTTP; this module composes it with the
principal, the ledger (which seeds month counters) and the app's lifecycle.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Scope

from api.generation.hooks import Admission, Outcome, Ticket
from auth.keys import Principal
from auth.ratelimit import (
    FailureMode,
    Limiter,
    LimiterConfig,
    LimiterMetrics,
    Limits,
    Refusal,
    Reservation,
    rate_limit_headers,
    refusal_error,
    storage_from_url,
)
from auth.ratelimit import Scope as LimitScope
from billing.ledger import month_usage_reader
from core.config import Settings
from core.errors import SluicegateError

log = logging.getLogger(__name__)

WAITLIST_SUBJECT = "ip:"


def build_limiter(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    registry: CollectorRegistry | None = None,
) -> Limiter:
    """`redis_url` set: the shared Redis store; otherwise this process's memory store."""
    url = settings.redis_url or "memory://"
    config = LimiterConfig(
        failure_mode=FailureMode(settings.limiter_failure_mode),
        slot_lease_s=settings.limiter_slot_lease_s,
    )
    return Limiter(
        storage_from_url(
            url,
            prefix=f"{settings.redis_prefix}rl:",
            timeout_s=settings.redis_timeout_s,
            linger_s=settings.limiter_linger_ms / 1000,
        ),
        config=config,
        month_usage=month_usage_reader(sessions) if sessions is not None else None,
        metrics=LimiterMetrics(registry),
    )


@functools.lru_cache(maxsize=4096)
def principal_scopes(principal: Principal) -> tuple[Limits, tuple[LimitScope, ...]]:
    """The account's tier limits, plus the key's own caps when it has overrides.

    Cached: the authenticator hands out the same (immutable) principal for seconds on end,
    and building and validating these on every request was a measurable part of admission.
    """
    account = Limits(
        requests_per_minute=principal.requests_per_minute,
        tokens_per_minute=principal.tokens_per_minute,
        max_concurrent_requests=principal.max_concurrent_requests,
        tokens_per_month=principal.tokens_per_month,
    )
    key = Limits(
        requests_per_minute=principal.key_requests_per_minute,
        tokens_per_minute=principal.key_tokens_per_minute,
        max_concurrent_requests=principal.key_max_concurrent_requests,
    )
    if key == Limits():
        return account, ()
    return account, (LimitScope(principal.key_id, key),)


def _principal(caller: object) -> Principal:
    if not isinstance(caller, Principal):
        raise TypeError(f"rate limits need an authenticated Principal, got {type(caller)!r}")
    return caller


@dataclass(frozen=True, slots=True)
class LimitedAdmission:
    limiter: Limiter
    reservation: Reservation
    headers: Mapping[str, str] = field(default_factory=dict)

    async def settle(self, outcome: Outcome) -> None:
        await self.limiter.settle(self.reservation, outcome.total_tokens)


class LimiterAdmitter:
    """`api.generation.hooks.Admitter` over the limiter: reserve or raise the typed refusal."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def admit(self, ticket: Ticket) -> Admission:
        principal = _principal(ticket.caller)
        limits, extra = principal_scopes(principal)
        # Our own id: the ticket's may come from the client (x-request-id) and repeat.
        request_id = f"{ticket.request_id}.{os.urandom(6).hex()}"
        result = await self.limiter.admit(
            principal.account_id,
            limits,
            request_id=request_id,
            tokens=ticket.reserved_tokens,
            extra=extra,
        )
        if isinstance(result, Refusal):
            raise refusal_error(result)
        return LimitedAdmission(self.limiter, result, rate_limit_headers(result.status))


class WaitlistIpLimit:
    """At most `per_minute` waitlist applications per client IP in any rolling minute."""

    def __init__(self, limiter: Limiter, per_minute: int) -> None:
        self.limiter = limiter
        self.limits = Limits(requests_per_minute=per_minute)

    async def __call__(self, client_ip: str) -> None:
        result = await self.limiter.admit(
            f"{WAITLIST_SUBJECT}{client_ip}",
            self.limits,
            request_id=os.urandom(16).hex(),
            tokens=0,
        )
        if isinstance(result, Refusal):
            raise refusal_error(result)


async def add_rate_limit_headers(scope: Scope, message: Message) -> None:
    """`x-ratelimit-*` on authenticated responses that do not carry them yet.

    A `RequestContextMiddleware` hook (run as each response starts). Generation responses
    and 429s already have the headers, from their reservation or refusal; for the rest the
    limiter is asked for the current numbers, reserving nothing.
    """
    principal = scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        return
    limiter = getattr(getattr(scope["app"].state, "services", None), "limiter", None)
    if limiter is None:
        return
    headers = MutableHeaders(scope=message)
    if "x-ratelimit-limit-requests" in headers or "x-ratelimit-limit-tokens" in headers:
        return
    limits, extra = principal_scopes(principal)
    try:
        status = await limiter.status(principal.account_id, limits, extra=extra)
    except SluicegateError as exc:  # fail_closed and the store is down: no numbers to give
        log.warning("no rate-limit headers: %s", exc.message)
        return
    for name, value in rate_limit_headers(status).items():
        headers[name] = value
