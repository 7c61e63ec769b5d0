"""The in-process store (`memory://`): same steps and numbers as the Redis scripts.

Each step runs without awaiting under one lock, so it is atomic for every coroutine and
thread of this process; limits hold per process only (the embedded deployment, and the
fail-open fallback when the shared store is down).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from auth.ratelimit.storage import (
    AdmitCall,
    AdmitResult,
    AdmitVerdict,
    MonthUsage,
    RawRefusal,
    RenewCall,
    ScopeState,
    SeedCall,
    SettleCall,
)
from auth.ratelimit.types import LimitKind, Scope

# How often (in store time) idle subjects are swept out, so per-IP state does not pile up.
_SWEEP_EVERY_MS = 60_000


@dataclass
class _Month:
    used: int | None = None
    reserved: int = 0
    keep_until_ms: int = 0


@dataclass
class _Subject:
    log: list[tuple[int, str]] = field(default_factory=list)  # (admitted_ms, request id), sorted
    weights: dict[str, int] = field(default_factory=dict)
    window_tokens: int = 0
    slots: dict[str, int] = field(default_factory=dict)  # request id -> deadline_ms
    bookings: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (tokens, month)
    months: dict[str, _Month] = field(default_factory=dict)

    def prune(self, now_ms: int, window_ms: int, month: str) -> None:
        cut = bisect.bisect_right(self.log, (now_ms - window_ms, "\uffff"))
        for _, rid in self.log[:cut]:
            self.window_tokens -= self.weights.pop(rid, 0)
        del self.log[:cut]
        for rid, deadline in list(self.slots.items()):
            if deadline <= now_ms:
                del self.slots[rid]
                tokens, booked_month = self.bookings.pop(rid, (0, ""))
                if booked_month == month and month in self.months:
                    self.months[month].reserved -= tokens

    def idle(self, now_ms: int) -> bool:
        if self.log or self.slots:
            return False
        return all(m.keep_until_ms <= now_ms for m in self.months.values())


class MemoryStorage:
    def __init__(self) -> None:
        self._subjects: dict[str, _Subject] = {}
        self._lock = threading.Lock()
        self._next_sweep_ms = 0

    async def admit(self, call: AdmitCall) -> AdmitResult:
        with self._lock:
            return self._admit(call)

    async def settle(self, call: SettleCall) -> bool:
        with self._lock:
            settled = False
            for subject in call.subjects:
                settled |= self._settle_one(self._subjects.get(subject), call)
            return settled

    async def renew(self, call: RenewCall) -> int:
        with self._lock:
            renewed = 0
            for lease in call.leases:
                held = False
                for subject in lease.subjects:
                    state = self._subjects.get(subject)
                    deadline = state.slots.get(lease.request_id) if state else None
                    if state is not None and deadline is not None:
                        state.slots[lease.request_id] = max(deadline, call.deadline_ms)
                        held = True
                renewed += held
            return renewed

    async def seed_month(self, call: SeedCall) -> bool:
        with self._lock:
            state = self._subjects.setdefault(call.subject, _Subject())
            counter = state.months.setdefault(call.month, _Month())
            if counter.used is not None:
                return False
            counter.used = call.used_tokens
            counter.keep_until_ms = max(counter.keep_until_ms, call.now_ms + call.keep_ms)
            return True

    async def month_usage(self, subject: str, month: str) -> MonthUsage:
        with self._lock:
            state = self._subjects.get(subject)
            counter = state.months.get(month) if state else None
            if counter is None:
                return MonthUsage(used=None, reserved=0)
            return MonthUsage(used=counter.used, reserved=counter.reserved)

    async def aclose(self) -> None:
        return None

    def _admit(self, call: AdmitCall) -> AdmitResult:
        self._sweep(call)
        subjects = [self._subjects.setdefault(s.subject, _Subject()) for s in call.scopes]
        if not call.dry_run and any(
            call.request_id in st.weights or call.request_id in st.bookings for st in subjects
        ):
            return AdmitResult(AdmitVerdict.DUPLICATE)
        for st in subjects:
            st.prune(call.now_ms, call.window_ms, call.month)
        tracked: list[bool] = []
        for index, (scope, st) in enumerate(zip(call.scopes, subjects, strict=True)):
            counter = st.months.get(call.month)
            is_tracked = scope.limits.as_tuple()[3] > 0 or counter is not None
            if is_tracked and (counter is None or counter.used is None) and not call.dry_run:
                if call.seed_required:
                    return AdmitResult(AdmitVerdict.NEEDS_SEED, seed_scope=index)
                st.months.setdefault(call.month, _Month()).used = 0
            tracked.append(is_tracked)
        entries = list(zip(call.scopes, subjects, tracked, strict=True))
        refusal = _worst_refusal([_check(i, e[0], e[1], call) for i, e in enumerate(entries)])
        booked = False
        if refusal is None and not call.dry_run:
            for scope, st, is_tracked in entries:
                booked |= _reserve(scope, st, call, is_tracked)
        states = tuple(_state(st, call.month, is_tracked) for _, st, is_tracked in entries)
        outcome = AdmitVerdict.ADMITTED if refusal is None else AdmitVerdict.REFUSED
        return AdmitResult(outcome, states, refusal, booked=booked)

    def _settle_one(self, state: _Subject | None, call: SettleCall) -> bool:
        if state is None or call.request_id not in state.bookings:
            return False
        reserved, month = state.bookings.pop(call.request_id)
        state.slots.pop(call.request_id, None)
        old = state.weights.get(call.request_id)
        if old is not None:
            state.weights[call.request_id] = call.actual_tokens
            state.window_tokens += call.actual_tokens - old
        counter = state.months.get(month) if month == call.month else None
        if counter is not None:
            counter.reserved -= reserved
            counter.used = (counter.used or 0) + call.actual_tokens
        return True

    def _sweep(self, call: AdmitCall) -> None:
        if call.now_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = call.now_ms + _SWEEP_EVERY_MS
        for subject, state in list(self._subjects.items()):
            state.prune(call.now_ms, call.window_ms, call.month)
            if state.idle(call.now_ms):
                del self._subjects[subject]


def _check(index: int, scope: Scope, st: _Subject, call: AdmitCall) -> RawRefusal | None:
    """Every refusal of this scope, reduced to the one with the longest wait."""
    rpm, tpm, concurrency, quota = scope.limits.as_tuple()
    found: list[RawRefusal] = []
    if rpm and len(st.log) + 1 > rpm:
        oldest_blocking = st.log[len(st.log) - rpm][0]
        found.append(
            RawRefusal(
                LimitKind.REQUESTS, index, rpm, len(st.log), oldest_blocking + call.window_ms
            )
        )
    if tpm and st.window_tokens + call.tokens > tpm:
        retry = None if call.tokens > tpm else _tokens_retry_at(st, tpm - call.tokens, call)
        found.append(RawRefusal(LimitKind.TOKENS, index, tpm, st.window_tokens, retry))
    if concurrency and len(st.slots) + 1 > concurrency:
        found.append(
            RawRefusal(
                LimitKind.CONCURRENCY, index, concurrency, len(st.slots), min(st.slots.values())
            )
        )
    counter = st.months.get(call.month)
    month_total = (counter.used or 0) + counter.reserved if counter else 0
    if quota and month_total + call.tokens > quota:
        retry = None if call.tokens > quota else call.month_reset_ms
        found.append(RawRefusal(LimitKind.MONTH, index, quota, month_total, retry))
    return _worst_refusal(found)


def _tokens_retry_at(st: _Subject, allowed: int, call: AdmitCall) -> int:
    """When enough of the window has expired for what remains to be at most `allowed`."""
    remaining = st.window_tokens
    for admitted_ms, rid in st.log:
        remaining -= st.weights.get(rid, 0)
        if remaining <= allowed:
            return admitted_ms + call.window_ms
    return call.now_ms + call.window_ms


def _worst_refusal(found: Sequence[RawRefusal | None]) -> RawRefusal | None:
    """The refusal to report: one that never fits, else the one lifting last."""
    best: RawRefusal | None = None
    for refusal in found:
        if refusal is None:
            continue
        if best is None or _wait_key(refusal) > _wait_key(best):
            best = refusal
    return best


def _wait_key(refusal: RawRefusal) -> float:
    return float("inf") if refusal.retry_at_ms is None else refusal.retry_at_ms


def _reserve(scope: Scope, st: _Subject, call: AdmitCall, tracked: bool) -> bool:
    rpm, tpm, concurrency, _ = scope.limits.as_tuple()
    rid = call.request_id
    if rpm or tpm:
        bisect.insort(st.log, (call.now_ms, rid))
        st.weights[rid] = call.tokens
        st.window_tokens += call.tokens
    if not (concurrency or tpm or tracked):
        return False
    st.slots[rid] = call.deadline_ms
    st.bookings[rid] = (call.tokens, call.month if tracked else "")
    if tracked:
        counter = st.months.setdefault(call.month, _Month(used=0))
        counter.reserved += call.tokens
        counter.keep_until_ms = max(counter.keep_until_ms, call.now_ms + call.keep_ms)
    return True


def _state(st: _Subject, month: str, tracked: bool) -> ScopeState:
    counter = st.months.get(month)
    month_tokens = None
    if tracked:
        month_tokens = ((counter.used or 0) + counter.reserved) if counter else 0
    return ScopeState(
        requests=len(st.log),
        window_tokens=st.window_tokens,
        newest_ms=st.log[-1][0] if st.log else None,
        slots=len(st.slots),
        month_tokens=month_tokens,
    )
