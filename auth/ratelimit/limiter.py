"""The limiter strategy: times, months, seeding, fail-open/closed, and what the numbers mean.

A storage (memory or Redis) does each step atomically; this class decides what to ask it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter

from auth.ratelimit.leases import LeaseKeeper
from auth.ratelimit.memory import MemoryStorage
from auth.ratelimit.periods import month_of, next_month_start
from auth.ratelimit.storage import (
    AdmitCall,
    AdmitResult,
    AdmitVerdict,
    MonthUsage,
    RawRefusal,
    ScopeState,
    SeedCall,
    SettleCall,
    Storage,
    StoreUnavailable,
)
from auth.ratelimit.types import (
    LimitKind,
    Limits,
    RateLimitStatus,
    Refusal,
    Reservation,
    Scope,
)
from core.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# (subject, "YYYY-MM") -> tokens the ledger has recorded for that subject in that month.
MonthUsageProvider = Callable[[str, str], Awaitable[int]]

_DAY_S = 86_400.0


class FailureMode(StrEnum):
    FAIL_OPEN = "fail_open"  # shared store down: per-process limits, logged and counted
    FAIL_CLOSED = "fail_closed"  # shared store down: refuse with 503


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    window_s: float = 60.0
    # A booked reservation is held by a lease this process renews while the request runs
    # (`leases`): a dead process's slots and reserved tokens are released within this.
    slot_lease_s: float = 15.0
    failure_mode: FailureMode = FailureMode.FAIL_OPEN
    # A slot frees when some request ends, which nobody can predict; suggest a short wait.
    concurrency_retry_s: float = 1.0
    # After the store fails, skip it for this long instead of timing out on every request.
    store_retry_s: float = 1.0
    # Month counters outlive their month by this much (late settles, reports).
    keep_after_month_s: float = 40 * _DAY_S


class LimiterMetrics:
    """Prometheus counters; pass the app's registry, or none to keep them unregistered."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.store_failures = Counter(
            "sluicegate_ratelimit_store_failures",
            "Limiter store calls that failed (the store was unreachable).",
            ["operation", "mode"],
            registry=registry,
        )
        self.fallback_admissions = Counter(
            "sluicegate_ratelimit_fallback_admissions",
            "Admissions decided by the per-process fallback store (fail_open).",
            registry=registry,
        )
        self.decisions = Counter(
            "sluicegate_ratelimit_decisions",
            "Admission decisions by outcome and refusing limit.",
            ["outcome", "limit"],
            registry=registry,
        )


class Limiter:
    def __init__(
        self,
        store: Storage,
        *,
        config: LimiterConfig | None = None,
        clock: Callable[[], float] = time.time,
        month_usage: MonthUsageProvider | None = None,
        metrics: LimiterMetrics | None = None,
    ) -> None:
        self.store = store
        self.config = config or LimiterConfig()
        self._clock = clock
        self._month_usage = month_usage
        self._metrics = metrics or LimiterMetrics()
        self._admitted = self._metrics.decisions.labels("admitted", "")  # every request's
        self._fallback = MemoryStorage()
        self._store_down_until = 0.0  # time.monotonic(): a circuit breaker, not limiter time
        self.leases = LeaseKeeper(
            lease_s=self.config.slot_lease_s, clock=clock, on_failure=self._renewal_failed
        )

    async def admit(
        self,
        subject: str,
        limits: Limits,
        *,
        request_id: str,
        tokens: int,
        extra: Sequence[Scope] = (),
        now: float | None = None,
    ) -> Reservation | Refusal:
        """Reserve 1 request, `tokens`, a slot and month tokens in every scope, or nothing.

        `extra` scopes (e.g. a key's own limits inside its account's) must hold too.
        """
        if not request_id or request_id.startswith("#"):
            raise ValueError(f"bad request id {request_id!r}")
        if tokens < 0:
            raise ValueError("tokens cannot be negative")
        scopes = (Scope(subject, limits), *extra)
        call = self._admit_call(scopes, request_id, tokens, now, dry_run=False)
        result, fallback = await self._on_store("admit", lambda st: self._admit_seeded(st, call))
        if result.outcome is AdmitVerdict.DUPLICATE:
            raise ValueError(f"request id {request_id!r} was already admitted")
        status = _status(scopes, result.states, call)
        if result.refusal is not None:
            self._metrics.decisions.labels("refused", result.refusal.kind.value).inc()
            return self._refusal(result.refusal, scopes, call, status)
        self._admitted.inc()
        if fallback:
            self._metrics.fallback_admissions.inc()
        if result.booked:
            store = self._fallback if fallback else self.store
            self.leases.hold(store, request_id, tuple(s.subject for s in scopes))
        return Reservation(
            request_id=request_id,
            subjects=tuple(s.subject for s in scopes),
            tokens=tokens,
            month=call.month,
            status=status,
            booked=result.booked,
            fallback=fallback,
        )

    async def status(
        self,
        subject: str,
        limits: Limits,
        *,
        extra: Sequence[Scope] = (),
        now: float | None = None,
    ) -> RateLimitStatus:
        """The header numbers without admitting anything (for responses that are not admitted)."""
        scopes = (Scope(subject, limits), *extra)
        call = self._admit_call(scopes, "#status", 0, now, dry_run=True)
        result, _ = await self._on_store("status", lambda st: st.admit(call))
        return _status(scopes, result.states, call)

    async def snapshot(
        self, subject: str, limits: Limits, *, now: float | None = None
    ) -> ScopeState:
        """The raw numbers of one subject now: window requests and tokens, slots, month."""
        scopes = (Scope(subject, limits),)
        call = self._admit_call(scopes, "#snapshot", 0, now, dry_run=True)
        result, _ = await self._on_store("snapshot", lambda st: st.admit(call))
        return result.states[0]

    async def settle(self, reservation: Reservation, actual_tokens: int) -> bool:
        """Charge `actual_tokens` instead of the reservation and free the slot; idempotent.

        Never raises for a store outage: the settle is then retried in the background, and
        the slot is free within the lease either way.
        """
        if not reservation.booked:
            return False
        self.leases.release(reservation.request_id)
        call = SettleCall(
            request_id=reservation.request_id,
            subjects=reservation.subjects,
            month=reservation.month,
            actual_tokens=max(0, actual_tokens),
        )
        store = self._fallback if reservation.fallback else self.store
        try:
            return await store.settle(call)
        except StoreUnavailable as exc:
            self._store_failed("settle", exc)
            self.leases.retry_settle(store, call)
            return False

    async def seed_month(
        self, subject: str, month: str, used_tokens: int, *, now: float | None = None
    ) -> bool:
        """Set a month's used tokens if nothing is there yet (from the ledger); never adds."""
        call = self._seed_call(subject, month, used_tokens, now)
        seeded, _ = await self._on_store("seed", lambda st: st.seed_month(call))
        return seeded

    async def month_usage(self, subject: str, month: str) -> MonthUsage:
        usage, _ = await self._on_store("month_usage", lambda st: st.month_usage(subject, month))
        return usage

    async def aclose(self) -> None:
        await self.leases.aclose()
        await self.store.aclose()

    def _admit_call(
        self,
        scopes: tuple[Scope, ...],
        request_id: str,
        tokens: int,
        now: float | None,
        *,
        dry_run: bool,
    ) -> AdmitCall:
        at = self._clock() if now is None else now
        reset = next_month_start(at)
        return AdmitCall(
            request_id=request_id,
            tokens=tokens,
            scopes=scopes,
            now_ms=math.floor(at * 1000),
            window_ms=round(self.config.window_s * 1000),
            deadline_ms=self.leases.deadline_ms(at),
            month=month_of(at),
            month_reset_ms=math.ceil(reset * 1000),
            keep_ms=math.ceil((reset - at + self.config.keep_after_month_s) * 1000),
            seed_required=self._month_usage is not None,
            dry_run=dry_run,
        )

    def _seed_call(self, subject: str, month: str, used: int, now: float | None) -> SeedCall:
        at = self._clock() if now is None else now
        keep_s = next_month_start(at) - at + self.config.keep_after_month_s
        return SeedCall(subject, month, used, math.floor(at * 1000), math.ceil(keep_s * 1000))

    async def _admit_seeded(self, store: Storage, call: AdmitCall) -> AdmitResult:
        """Admit; a month counter that is missing is seeded from the ledger, then retried."""
        for _ in range(len(call.scopes) + 1):
            result = await store.admit(call)
            if (
                result.outcome is not AdmitVerdict.NEEDS_SEED
                or result.seed_scope is None
                or self._month_usage is None
            ):
                return result
            subject = call.scopes[result.seed_scope].subject
            used = await self._month_usage(subject, call.month)
            seed = self._seed_call(subject, call.month, used, call.now_ms / 1000)
            await store.seed_month(seed)
        raise RuntimeError("month counters still missing after seeding every scope")

    async def _on_store(
        self, operation: str, step: Callable[[Storage], Awaitable[T]]
    ) -> tuple[T, bool]:
        """Run a step on the shared store; on an outage fail open (fallback) or closed (503)."""
        if time.monotonic() >= self._store_down_until:
            try:
                return await step(self.store), False
            except StoreUnavailable as exc:
                self._store_failed(operation, exc)
        elif self.config.failure_mode is FailureMode.FAIL_CLOSED:
            self._metrics.store_failures.labels(operation, self.config.failure_mode.value).inc()
        if self.config.failure_mode is FailureMode.FAIL_CLOSED:
            raise BackendUnavailable("The rate limiter is unavailable. Please retry shortly.")
        return await step(self._fallback), True

    def _renewal_failed(self, operation: str, exc: StoreUnavailable) -> None:
        """Counted and logged; a background step never opens the circuit breaker."""
        self._metrics.store_failures.labels(operation, self.config.failure_mode.value).inc()
        log.warning("rate limiter store unavailable during %s: %s", operation, exc)

    def _store_failed(self, operation: str, exc: StoreUnavailable) -> None:
        mode = self.config.failure_mode.value
        self._metrics.store_failures.labels(operation, mode).inc()
        self._store_down_until = time.monotonic() + self.config.store_retry_s
        log.warning("rate limiter store unavailable during %s (%s): %s", operation, mode, exc)

    def _refusal(
        self,
        raw: RawRefusal,
        scopes: tuple[Scope, ...],
        call: AdmitCall,
        status: RateLimitStatus,
    ) -> Refusal:
        retry_after: float | None = None
        if raw.retry_at_ms is not None:
            retry_after = max(0.0, (raw.retry_at_ms - call.now_ms) / 1000)
            if raw.kind in (LimitKind.REQUESTS, LimitKind.TOKENS):
                # Nothing stays in the window longer than the window. More means an entry from
                # a process whose clock read came later than ours (calls race to the store).
                retry_after = min(retry_after, call.window_ms / 1000)
            if raw.kind is LimitKind.CONCURRENCY:
                retry_after = min(retry_after, self.config.concurrency_retry_s)
        per_request = raw.kind in (LimitKind.REQUESTS, LimitKind.CONCURRENCY)
        return Refusal(
            kind=raw.kind,
            subject=scopes[raw.scope].subject,
            limit=raw.limit,
            used=raw.used,
            requested=1 if per_request else call.tokens,
            retry_after_s=retry_after,
            status=status,
        )


def _status(
    scopes: tuple[Scope, ...], states: tuple[ScopeState, ...], call: AdmitCall
) -> RateLimitStatus:
    """Per dimension, the scope with the least remaining speaks for all of them."""
    requests: tuple[int, int, float] | None = None
    tokens: tuple[int, int, float] | None = None
    for scope, state in zip(scopes, states, strict=True):
        rpm, tpm, _, _ = scope.limits.as_tuple()
        reset_s = 0.0
        if state.newest_ms is not None:
            reset_s = (state.newest_ms + call.window_ms - call.now_ms) / 1000
            reset_s = min(max(0.0, reset_s), call.window_ms / 1000)  # see the retry clamp
        if rpm:
            left = max(0, rpm - state.requests)
            if requests is None or left < requests[1]:
                requests = (rpm, left, reset_s)
        if tpm:
            left = max(0, tpm - state.window_tokens)
            if tokens is None or left < tokens[1]:
                tokens = (tpm, left, reset_s)
    return RateLimitStatus(
        limit_requests=requests[0] if requests else None,
        remaining_requests=requests[1] if requests else None,
        reset_requests_s=requests[2] if requests else None,
        limit_tokens=tokens[0] if tokens else None,
        remaining_tokens=tokens[1] if tokens else None,
        reset_tokens_s=tokens[2] if tokens else None,
    )
