"""Leases: a reservation holds its slot only while the process that made it is alive.

A booked reservation (a concurrency slot, its reserved tokens and month tokens) carries a
deadline `lease_s` ahead. While its request runs, this process renews the leases of all its
live reservations together, every `lease_s / 3`, in one storage step (one Redis round trip
for every request in flight, whatever their number). A process that dies stops renewing,
so whatever it held is released by the next admission after at most `lease_s`: an account
at its concurrency limit waits seconds after a gateway crash, not the length of the longest
request. A live request is renewed for as long as it runs, however long that is.

A settlement the store did not take (it was down, or did not answer in time) is retried at
each renewal until it lands or its lease has run out; settling is idempotent, so a retry of
a settle that did land (its reply was lost) changes nothing. Either way the slot is free
within `lease_s` of the failed settle.

Deadlines are read from each gateway's clock (as every limiter time is), so the gateways'
clocks must agree to well within `lease_s`: one running ahead by more than the lease would
take live requests' slots for expired. NTP keeps them within milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from auth.ratelimit.storage import Lease, RenewCall, SettleCall, Storage, StoreUnavailable

log = logging.getLogger(__name__)

# Leases per renewal step: bounds one script call's arguments with thousands in flight.
RENEW_BATCH = 1000


@dataclass(frozen=True, slots=True)
class _Unsettled:
    store: Storage
    call: SettleCall
    give_up_at: float  # time.monotonic(): its lease has run out, the store released it


class LeaseKeeper:
    """The live leases of one limiter; a background task renews them while there are any."""

    def __init__(
        self,
        *,
        lease_s: float,
        clock: Callable[[], float],
        on_failure: Callable[[str, StoreUnavailable], None],
    ) -> None:
        if lease_s <= 0:
            raise ValueError("a lease must be longer than 0 s")
        self.lease_s = lease_s
        self._clock = clock
        self._on_failure = on_failure
        self._held: dict[str, tuple[Storage, Lease]] = {}
        self._unsettled: dict[str, _Unsettled] = {}
        self._task: asyncio.Task[None] | None = None

    def deadline_ms(self, now: float) -> int:
        return math.floor((now + self.lease_s) * 1000)

    def hold(self, store: Storage, request_id: str, subjects: tuple[str, ...]) -> None:
        """Renew this reservation's lease until `release`."""
        self._held[request_id] = (store, Lease(request_id, subjects))
        self._run_while_needed()

    def release(self, request_id: str) -> None:
        self._held.pop(request_id, None)

    def retry_settle(self, store: Storage, call: SettleCall) -> None:
        """A settle that failed: retried with the renewals until its lease has run out."""
        give_up_at = time.monotonic() + self.lease_s
        self._unsettled[call.request_id] = _Unsettled(store, call, give_up_at)
        self._run_while_needed()

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def unsettled(self) -> int:
        return len(self._unsettled)

    async def renew_now(self) -> None:
        """One round: renew every held lease, retry every failed settle."""
        await self._renew()
        await self._retry_settles()

    async def aclose(self) -> None:
        """Stop renewing: what this process still holds is released within `lease_s`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _run_while_needed(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="ratelimit-leases"
            )

    async def _run(self) -> None:
        try:
            while self._held or self._unsettled:
                await asyncio.sleep(self.lease_s / 3)
                await self.renew_now()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _renew(self) -> None:
        by_store: dict[int, tuple[Storage, list[Lease]]] = {}
        for store, lease in self._held.values():
            by_store.setdefault(id(store), (store, []))[1].append(lease)
        deadline = self.deadline_ms(self._clock())
        for store, leases in by_store.values():
            for start in range(0, len(leases), RENEW_BATCH):
                call = RenewCall(tuple(leases[start : start + RENEW_BATCH]), deadline)
                try:
                    await store.renew(call)
                except StoreUnavailable as exc:  # the next round tries again
                    self._on_failure("renew", exc)
                    break

    async def _retry_settles(self) -> None:
        now = time.monotonic()
        for request_id, pending in list(self._unsettled.items()):
            if now >= pending.give_up_at:
                log.warning("settle of %s never landed; its lease has run out", request_id)
                del self._unsettled[request_id]
                continue
            try:
                await pending.store.settle(pending.call)
            except StoreUnavailable as exc:
                self._on_failure("settle_retry", exc)
                return  # the store is still down: the rest wait for the next round
            self._unsettled.pop(request_id, None)
