"""Settling ledger rows left `started` by a gateway process that died.

Liveness is per process, not per row: every gateway process registers an instance id in
`billing_instances`, stamps every row it starts with it, and refreshes its heartbeat every
`heartbeat_interval`. A `started` row is stale when its instance has no heartbeat newer than
`stale_after` (the process died or was killed; a graceful shutdown deletes its instance row so
its leftovers are settled at once), or, as a backstop against a live process that lost track
of a row, when it was received more than `max_request_age` ago. A long stream on a live
process is therefore never swept, whatever its length (up to the backstop).

A stale row becomes `interrupted`, billed for its prompt tokens and whatever completion tokens
were recorded, and enters the rollups, through the same `finish_rows` as every other row: its
`WHERE status = 'started'` makes two sweepers on two replicas (or a sweeper racing a late
finish) settle each row exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import STALE, interrupt_rows
from billing.models import GatewayInstance, LedgerEntry, Status
from billing.writer import WRITE_ERRORS
from core.db import transaction, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    heartbeat_interval: dt.timedelta = dt.timedelta(seconds=5)
    stale_after: dt.timedelta = dt.timedelta(seconds=30)
    sweep_interval: dt.timedelta = dt.timedelta(seconds=30)
    max_request_age: dt.timedelta = dt.timedelta(hours=6)
    batch: int = 500


async def register_instance(session: AsyncSession, instance_id: str, now: dt.datetime) -> None:
    session.add(GatewayInstance(id=instance_id, started_at=now, heartbeat_at=now))
    await session.flush()


async def heartbeat(session: AsyncSession, instance_id: str, now: dt.datetime) -> None:
    result = await session.execute(
        update(GatewayInstance).where(GatewayInstance.id == instance_id).values(heartbeat_at=now)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]  # swept as dead: live again
        await register_instance(session, instance_id, now)


async def retire_instance(session: AsyncSession, instance_id: str) -> None:
    await session.execute(delete(GatewayInstance).where(GatewayInstance.id == instance_id))


def _stale(now: dt.datetime, policy: SweepPolicy) -> ColumnElement[bool]:
    """Rows (of the `STALE` alias) whose instance is not alive, or that are too old."""
    alive = select(GatewayInstance.id).where(
        GatewayInstance.heartbeat_at >= now - policy.stale_after
    )
    return or_(
        STALE.c.instance_id.not_in(alive),
        STALE.c.received_at < now - policy.max_request_age,
    )


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: dt.datetime | None = None,
    policy: SweepPolicy | None = None,
) -> int:
    """Settle every stale started row as `interrupted`; returns how many this call settled."""
    policy = policy or SweepPolicy()
    now = now or utcnow()
    settled = 0
    while True:
        async with transaction(sessions) as session:
            done = await interrupt_rows(
                session, stale=_stale(now, policy), now=now, limit=policy.batch
            )
        settled += len(done)
        if len(done) < policy.batch:
            break
    await _forget_dead_instances(sessions, now=now, policy=policy)
    return settled


async def _forget_dead_instances(
    sessions: async_sessionmaker[AsyncSession], *, now: dt.datetime, policy: SweepPolicy
) -> None:
    """Drop instance rows that are stale and own no started row any more."""
    owns_rows = exists().where(
        LedgerEntry.instance_id == GatewayInstance.id,
        LedgerEntry.status == Status.STARTED.value,
    )
    async with transaction(sessions) as session:
        await session.execute(
            delete(GatewayInstance).where(
                GatewayInstance.heartbeat_at < now - policy.stale_after, ~owns_rows
            )
        )


class Maintenance:
    """The lifespan task of one gateway process: register, heartbeat, sweep, retire."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        instance_id: str,
        policy: SweepPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.instance_id = instance_id
        self.policy = policy or SweepPolicy()
        self.swept = 0
        self._stop = asyncio.Event()

    async def register(self) -> None:
        """Register this process, then settle what dead processes left (startup sweep)."""
        async with transaction(self.sessions) as session:
            await register_instance(session, self.instance_id, utcnow())
        self.swept += await sweep(self.sessions, policy=self.policy)

    async def run(self) -> None:
        """Heartbeat and sweep until `stop()`; a failed round is logged and retried.

        Stopping between rounds (not cancelling mid-query) lets a round's database work
        finish while the event loop still runs.
        """
        next_sweep = utcnow() + self.policy.sweep_interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), self.policy.heartbeat_interval.total_seconds()
                )
                return
            try:
                async with transaction(self.sessions) as session:
                    await heartbeat(session, self.instance_id, utcnow())
                if utcnow() >= next_sweep:
                    self.swept += await sweep(self.sessions, policy=self.policy)
                    next_sweep = utcnow() + self.policy.sweep_interval
            except WRITE_ERRORS:
                log.warning("billing maintenance round failed; retrying", exc_info=True)

    def stop(self) -> None:
        self._stop.set()

    async def retire(self) -> None:
        """Graceful shutdown: rows this process still has open are settled by the next sweep."""
        async with transaction(self.sessions) as session:
            await retire_instance(session, self.instance_id)
