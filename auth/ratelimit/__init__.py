"""Rate limits and quotas that hold across every gateway replica (no HTTP here).

`Limiter` (the strategy) over a `Storage` chosen by URL: `memory://` or `redis://…`.
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
from auth.ratelimit.storage import MonthUsage, Storage, StoreUnavailable, storage_from_url
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
