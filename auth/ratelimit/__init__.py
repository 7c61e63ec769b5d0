"""Rate limits and quotas that hold across every gateway replica (no HTTP here).

`Limiter` (the strategy) over a `Storage` chosen by URL: `memory://` or `redis://…`.

- `types`:       what the limiter is asked and answers: limits, scopes, reservations, refusals.
- `limiter`:     the strategy: times, months, seeding from the ledger, fail-open/closed.
- `storage`:     the storage contract (admit, settle, seed a month, read usage).
- `memory`:      the in-process store; `redis_store` the shared one (`admit.lua`, `settle.lua`,
                 `renew.lua`).
- `leases`:      a reservation's slot is held by a lease its live process renews.
- `stores`:      picks a store by URL.
- `batching`:    group commit: concurrent calls share one Redis round trip.
- `script_pipe`: the Redis store's own connection: script calls pipelined per round trip.
- `periods`:     calendar months (UTC) and the reset-header duration format.
- `refusals`:    refusals and status as the client sees them (typed errors, `x-ratelimit-*`).
"""

from auth.ratelimit.limiter import (
    FailureMode,
    Limiter,
    LimiterConfig,
    LimiterMetrics,
    MonthUsageProvider,
)
from auth.ratelimit.periods import format_duration, month_of, next_month_start
from auth.ratelimit.refusals import rate_limit_headers, refusal_error
from auth.ratelimit.storage import MonthUsage, Storage, StoreUnavailable
from auth.ratelimit.stores import storage_from_url
from auth.ratelimit.types import (
    LimitKind,
    Limits,
    RateLimitStatus,
    Refusal,
    Reservation,
    Scope,
    reservation_tokens,
)

__all__ = [
    "FailureMode",
    "LimitKind",
    "Limiter",
    "LimiterConfig",
    "LimiterMetrics",
    "Limits",
    "MonthUsage",
    "MonthUsageProvider",
    "RateLimitStatus",
    "Refusal",
    "Reservation",
    "Scope",
    "Storage",
    "StoreUnavailable",
    "format_duration",
    "month_of",
    "next_month_start",
    "rate_limit_headers",
    "refusal_error",
    "reservation_tokens",
    "storage_from_url",
]
