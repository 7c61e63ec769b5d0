"""Wiring usage metering into the app's lifespan: ledger writer, meter, sweeper task."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.metering import LedgerMeter
from billing.stores import open_store
from billing.sweeper import Maintenance, SweepPolicy
from billing.writer import LedgerWriter
from core.config import Settings

# At shutdown, how long finishes delayed by a database outage may take to land before the
# process leaves them to the sweeper.
FLUSH_TIMEOUT_S = 10.0


def new_instance_id() -> str:
    """Unique per process start: a restarted gateway never inherits a dead one's rows."""
    return f"gw_{socket.gethostname()[:24]}_{os.getpid()}_{os.urandom(4).hex()}"


def sweep_policy(settings: Settings) -> SweepPolicy:
    return SweepPolicy(
        heartbeat_interval=dt.timedelta(seconds=settings.ledger_heartbeat_s),
        stale_after=dt.timedelta(seconds=settings.ledger_stale_after_s),
        sweep_interval=dt.timedelta(seconds=settings.ledger_sweep_interval_s),
    )


async def open_metering(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], stack: AsyncExitStack
) -> LedgerMeter | None:
    """Register this process, sweep what dead ones left, heartbeat until the app stops.

    None when metering is switched off (`SLUICEGATE_METERING_ENABLED=false`, for benchmarks).
    """
    if not settings.metering_enabled:
        return None
    instance_id = new_instance_id()
    store = await open_store(settings.database_url, sessions, pool_size=settings.ledger_pool_size)
    writer = LedgerWriter(
        store,
        instance_id=instance_id,
        batching=settings.ledger_batching,
        linger_s=settings.ledger_linger_ms / 1000,
    )
    maintenance = Maintenance(sessions, instance_id=instance_id, policy=sweep_policy(settings))
    try:
        await maintenance.register()
    except BaseException:
        await store.close()
        raise
    task = asyncio.create_task(maintenance.run(), name="billing-maintenance")
    meter = LedgerMeter(writer, checkpoint_s=settings.ledger_checkpoint_s)

    async def stop() -> None:
        await meter.flush(FLUSH_TIMEOUT_S)
        maintenance.stop()
        await task
        await writer.close()
        await maintenance.retire()

    stack.push_async_callback(stop)
    return meter
