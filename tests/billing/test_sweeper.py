"""The sweeper settles rows of dead gateway processes, once, and never a live request's row."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from billing.ledger import LedgerBatch, RequestProgress, finish_rows, start_rows
from billing.models import GatewayInstance, LedgerEntry, UsageDaily
from billing.stores import open_store
from billing.sweeper import Maintenance, SweepPolicy, heartbeat, register_instance, sweep
from core.db import transaction
from tests.billing.conftest import T0, BillingDb, a_finish, a_start

POLICY = SweepPolicy(stale_after=dt.timedelta(seconds=30), max_request_age=dt.timedelta(hours=6))


async def _statuses(db: BillingDb) -> dict[str, tuple[str, int, int]]:
    async with db.sessions() as session:
        rows = (await session.execute(select(LedgerEntry))).scalars()
        return {r.request_id: (r.status, r.prompt_tokens, r.completion_tokens) for r in rows}


async def _setup_two_instances(db: BillingDb) -> None:
    """`live` heartbeated just now; `dead` last heartbeated a minute ago."""
    async with transaction(db.sessions) as session:
        await register_instance(session, "live", T0)
        await register_instance(session, "dead", T0 - dt.timedelta(minutes=1))
        await start_rows(session, [a_start("live_1", db.keys[0])], instance_id="live")
        await start_rows(
            session,
            [a_start("dead_1", db.keys[0]), a_start("dead_2", db.keys[1], prompt_tokens=33)],
            instance_id="dead",
        )
        await start_rows(session, [a_start("orphan", db.keys[2])], instance_id="never-seen")


async def _checkpoint(db: BillingDb, *progress: RequestProgress) -> None:
    """Through the store the gateway writes with (asyncpg's on PostgreSQL)."""
    store = await open_store(db.url, db.sessions)
    try:
        await store.write(LedgerBatch.of(progress), instance_id="gateway")
    finally:
        await store.close()


async def test_sweep_settles_dead_rows_only(billing_db: BillingDb) -> None:
    db = billing_db
    await _setup_two_instances(db)
    # dead_2 was a stream that had delivered 7 tokens by its last checkpoint (two in one
    # batch: the furthest counts); the other rows never delivered anything
    await _checkpoint(
        db,
        RequestProgress("dead_2", 7, T0),
        RequestProgress("dead_2", 5, T0),
        RequestProgress("live_1", 4, T0),
    )
    assert await sweep(db.sessions, now=T0 + dt.timedelta(seconds=1), policy=POLICY) == 3
    statuses = await _statuses(db)
    assert statuses == {
        "live_1": ("started", 10, 4),
        "dead_1": ("interrupted", 0, 0),  # nothing delivered: nothing billed
        "dead_2": ("interrupted", 33, 7),
        "orphan": ("interrupted", 0, 0),
    }
    async with db.sessions() as session:
        rollups = list((await session.execute(select(UsageDaily))).scalars())
        instances = set((await session.execute(select(GatewayInstance.id))).scalars())
        costs = {
            row.request_id: row.cost_micros
            for row in (await session.execute(select(LedgerEntry))).scalars()
        }
    assert sum(r.requests for r in rollups) == 3
    assert sum(r.prompt_tokens for r in rollups) == 33
    assert sum(r.completion_tokens for r in rollups) == 7
    assert (
        sum(r.cost_micros for r in rollups) == costs["dead_2"] + costs["dead_1"] + costs["orphan"]
    )
    assert costs["dead_1"] == costs["orphan"] == 0
    assert instances == {"live"}  # the dead instance owns nothing any more: forgotten
    # a checkpoint arriving after its row is final changes nothing
    await _checkpoint(db, RequestProgress("dead_2", 99, T0))
    assert (await _statuses(db))["dead_2"] == ("interrupted", 33, 7)

    # A second sweep, and a late finish from the "dead" process, change nothing.
    assert await sweep(db.sessions, now=T0 + dt.timedelta(seconds=2), policy=POLICY) == 0
    async with transaction(db.sessions) as session:
        assert await finish_rows(session, [a_finish("dead_1", completion_tokens=50)]) == []
    assert (await _statuses(db))["dead_1"] == ("interrupted", 0, 0)


async def test_live_row_is_swept_only_past_the_backstop_age(billing_db: BillingDb) -> None:
    db = billing_db
    await _setup_two_instances(db)
    later = T0 + POLICY.max_request_age + dt.timedelta(seconds=1)
    async with transaction(db.sessions) as session:
        await heartbeat(session, "live", later)
    await sweep(db.sessions, now=later, policy=POLICY)
    assert (await _statuses(db))["live_1"][0] == "interrupted"


async def test_concurrent_sweepers_settle_each_row_once(billing_db: BillingDb) -> None:
    db = billing_db
    await _setup_two_instances(db)
    now = T0 + dt.timedelta(seconds=1)
    counts = await asyncio.gather(*(sweep(db.sessions, now=now, policy=POLICY) for _ in range(3)))
    assert sum(counts) == 3
    async with db.sessions() as session:
        rollups = list((await session.execute(select(UsageDaily))).scalars())
    assert sum(r.requests for r in rollups) == 3


async def test_maintenance_lifecycle(billing_db: BillingDb) -> None:
    """Register sweeps at startup; heartbeats keep own rows; retiring hands them to the sweep."""
    db = billing_db
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start("left_over", db.keys[0])], instance_id="crashed")
    policy = SweepPolicy(
        heartbeat_interval=dt.timedelta(milliseconds=20),
        stale_after=dt.timedelta(seconds=5),
        sweep_interval=dt.timedelta(milliseconds=50),
    )
    maintenance = Maintenance(db.sessions, instance_id="me", policy=policy)
    await maintenance.register()
    assert maintenance.swept == 1
    async with transaction(db.sessions) as session:
        await start_rows(
            session,
            [a_start("mine", db.keys[0], received_at=dt.datetime.now(dt.UTC))],
            instance_id="me",
        )
    task = asyncio.create_task(maintenance.run())
    await asyncio.sleep(0.3)
    maintenance.stop()
    await asyncio.wait_for(task, 5)
    assert (await _statuses(db))["mine"][0] == "started"
    async with db.sessions() as session:
        beat = (await session.get(GatewayInstance, "me")).heartbeat_at  # type: ignore[union-attr]
    assert dt.datetime.now(dt.UTC) - beat < dt.timedelta(seconds=1)
    await maintenance.retire()
    assert await sweep(db.sessions, policy=policy) == 1
    assert (await _statuses(db))["mine"][0] == "interrupted"
