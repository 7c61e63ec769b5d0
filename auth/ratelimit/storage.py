"""The storage contract of the limiter (the stores implement it; `stores` picks one by URL).

The strategy (`limiter.Limiter`) decides times, months, seeding, fallback and what the
numbers mean; a storage performs each step atomically over a set of scopes:

* `admit`: prune expired window entries and reservations, check every limit of every
  scope, and only if all pass record 1 request + `tokens` in each scope's rolling window,
  a concurrency slot and a booked reservation (with a deadline) and the month reservation.
* `settle`: replace a booked reservation by the actual tokens, free its slot; a second
  settle of the same request finds no booking and changes nothing.
* `renew`: push the deadline of bookings that still exist further out (the lease of a live
  request); a booking already settled or expired is not brought back.
* `seed_month`: set a month's used tokens only if no value is there yet (never additive).

Per subject the data is: a rolling log (request id -> admission time) with token weights
and their running total, a slot set (request id -> deadline), a booking table
(request id -> reserved tokens and month) and one counter pair per month (used, reserved).
`memory.MemoryStorage` and `redis_store.RedisStorage` implement the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from auth.ratelimit.types import LimitKind, Scope


class StoreUnavailable(Exception):
    """The shared store did not answer; the limiter then fails open or closed."""


class AdmitVerdict(StrEnum):
    ADMITTED = "admitted"
    REFUSED = "refused"
    NEEDS_SEED = "needs_seed"  # a month counter is missing and must be seeded from the ledger
    DUPLICATE = "duplicate"  # the request id already holds a reservation or window entry


@dataclass(frozen=True, slots=True)
class AdmitCall:
    request_id: str
    tokens: int
    scopes: tuple[Scope, ...]
    now_ms: int
    window_ms: int
    deadline_ms: int  # when this request's slot and booking expire unless renewed or settled
    month: str
    month_reset_ms: int  # start of the next month: when a month refusal lifts
    keep_ms: int  # how long idle per-subject bookkeeping is kept (outlives any booking)
    seed_required: bool  # a missing month counter means "ask the ledger", not zero
    dry_run: bool = False  # only report the state (for headers), reserve nothing


@dataclass(frozen=True, slots=True)
class ScopeState:
    """One scope's numbers after the step (including this request if it was admitted)."""

    requests: int  # requests in the rolling window
    window_tokens: int  # tokens charged in the rolling window
    newest_ms: int | None  # admission time of the newest window entry
    slots: int  # requests holding a concurrency slot
    month_tokens: int | None  # used + reserved this month, None if the month is not tracked


@dataclass(frozen=True, slots=True)
class RawRefusal:
    kind: LimitKind
    scope: int  # index into AdmitCall.scopes
    limit: int
    used: int
    retry_at_ms: int | None  # absolute time the request would fit; None: it never fits


@dataclass(frozen=True, slots=True)
class AdmitResult:
    outcome: AdmitVerdict
    states: tuple[ScopeState, ...] = ()
    refusal: RawRefusal | None = None
    seed_scope: int | None = None
    booked: bool = False


@dataclass(frozen=True, slots=True)
class SettleCall:
    request_id: str
    subjects: tuple[str, ...]
    month: str
    actual_tokens: int


@dataclass(frozen=True, slots=True)
class Lease:
    request_id: str
    subjects: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RenewCall:
    """Move the deadline of every still-booked lease out to `deadline_ms` (never earlier)."""

    leases: tuple[Lease, ...]
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class SeedCall:
    subject: str
    month: str
    used_tokens: int
    now_ms: int
    keep_ms: int


@dataclass(frozen=True, slots=True)
class MonthUsage:
    used: int | None  # None: not seeded yet
    reserved: int


class Storage(Protocol):
    async def admit(self, call: AdmitCall) -> AdmitResult: ...

    async def settle(self, call: SettleCall) -> bool:
        """True if a booking was found and settled, False if there was none (idempotent)."""
        ...

    async def renew(self, call: RenewCall) -> int:
        """How many of the leases were still booked (and now run to the new deadline)."""
        ...

    async def seed_month(self, call: SeedCall) -> bool:
        """True if this call set the counter, False if a value was already there."""
        ...

    async def month_usage(self, subject: str, month: str) -> MonthUsage: ...

    async def aclose(self) -> None: ...
