"""What the limiter is asked and what it answers: limits, scopes, reservations, refusals."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


def _limit(value: int | None) -> int:
    """0 in a limit field means unlimited, like None (admin forms write 0 for 'no limit')."""
    if value is None:
        return 0
    if value < 0:
        raise ValueError(f"a limit cannot be negative, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one subject; None or 0 in a field means that dimension is unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    tokens_per_month: int | None = None

    def __post_init__(self) -> None:
        for value in self.as_tuple():
            _limit(value)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(rpm, tpm, concurrency, month) with 0 for unlimited: the storage wire order."""
        return (
            _limit(self.requests_per_minute),
            _limit(self.tokens_per_minute),
            _limit(self.max_concurrent_requests),
            _limit(self.tokens_per_month),
        )


@dataclass(frozen=True, slots=True)
class Scope:
    """One subject (an account, a key, an IP) whose limits must all hold for an admission."""

    subject: str
    limits: Limits

    def __post_init__(self) -> None:
        # split() cuts at exactly the characters isspace() names; in C, on every admission.
        if not self.subject or self.subject.split() != [self.subject]:
            raise ValueError(f"bad limiter subject {self.subject!r}")


class LimitKind(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """The numbers behind the `x-ratelimit-*` headers (None: that dimension is unlimited).

    Resets are seconds until the rolling window is back to its initial, empty state.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held for one request until `Limiter.settle` (or the TTL) gives it back."""

    request_id: str
    subjects: tuple[str, ...]
    tokens: int
    month: str  # "YYYY-MM" (UTC) the tokens were reserved against
    status: RateLimitStatus
    booked: bool  # False when nothing needs settling (e.g. a requests-only limit)
    fallback: bool = False  # admitted by the per-process store while the shared one was down


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted. Nothing was reserved for it."""

    kind: LimitKind
    subject: str
    limit: int
    used: int
    requested: int
    retry_after_s: float | None  # None: the request can never fit (larger than the limit)
    status: RateLimitStatus


def reservation_tokens(
    *, prompt_tokens: int, max_tokens: int, n: int = 1, best_of: int | None = None
) -> int:
    """The most tokens a request can use: what admission reserves against TPM and the month."""
    return prompt_tokens + max_tokens * max(n, best_of or 1)
