"""Ledger writes: idempotent start and finish, pinned prices, exact costs, rollups."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest
from sqlalchemy import func, select

from billing.ledger import LedgerBatch, RequestProgress, finish_rows, start_rows
from billing.models import NO_PRICE, LedgerEntry, Price, Status, UsageDaily
from billing.prices import PriceCreate, cost_micros, set_price
from billing.reports import usage_from_ledger, usage_report
from billing.stores import AsyncpgStore, LedgerStore, SessionStore, open_store
from billing.writer import LedgerWriter
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade
from tests.billing.conftest import T0, BillingDb, a_finish, a_start, seed_accounts

INSTANCE = "inst_test"


async def _price(db: BillingDb, model: str, prompt: int, completion: int, at: dt.datetime) -> Price:
    async with transaction(db.sessions) as session:
        return await set_price(
            session,
            PriceCreate(model, prompt, completion, effective_from=at),
            now=at,
        )


async def _rows(db: BillingDb) -> dict[str, LedgerEntry]:
    async with db.sessions() as session:
        rows = (await session.execute(select(LedgerEntry))).scalars()
        return {row.request_id: row for row in rows}


async def _rollups(db: BillingDb) -> list[UsageDaily]:
    async with db.sessions() as session:
        return list((await session.execute(select(UsageDaily))).scalars())


async def test_start_is_idempotent_and_pins_the_price(billing_db: BillingDb) -> None:
    db = billing_db
    old = await _price(db, "tiny", 1000, 2000, T0 - dt.timedelta(days=5))
    await _price(db, "tiny", 9999, 9999, T0 + dt.timedelta(hours=1))  # later: not this request's
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start("req_1", db.keys[0])], instance_id=INSTANCE)
    async with transaction(db.sessions) as session:  # a retry, with different numbers
        await start_rows(
            session, [a_start("req_1", db.keys[1], prompt_tokens=99)], instance_id="other"
        )
    rows = await _rows(db)
    assert list(rows) == ["req_1"]
    row = rows["req_1"]
    assert (row.status, row.prompt_tokens, row.key_id) == ("started", 10, db.keys[0][1])
    assert (row.price_id, row.instance_id, row.cost_micros) == (old.id, INSTANCE, 0)
    assert row.received_at == T0
    assert await _rollups(db) == []


async def test_finish_transitions_once_and_rolls_up_once(billing_db: BillingDb) -> None:
    db = billing_db
    price = await _price(db, "tiny", 1500, 2500, T0 - dt.timedelta(days=1))
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start("req_1", db.keys[0])], instance_id=INSTANCE)
    async with transaction(db.sessions) as session:
        first = await finish_rows(session, [a_finish("req_1", completion_tokens=7)])
    async with transaction(db.sessions) as session:
        again = await finish_rows(
            session, [a_finish("req_1", status=Status.ERROR, completion_tokens=500)]
        )
    assert [r.request_id for r in first] == ["req_1"] and again == []
    row = (await _rows(db))["req_1"]
    expected = cost_micros(10, 7, price)
    assert expected == (10 * 1500 + 7 * 2500 + 500) // 1000 == 33
    assert (row.status, row.completion_tokens, row.cost_micros) == ("ok", 7, expected)
    assert (row.latency_ms, row.backend, row.user) == (2000, "local", "u-1")
    [rollup] = await _rollups(db)
    assert (rollup.requests, rollup.prompt_tokens, rollup.completion_tokens) == (1, 10, 7)
    assert (rollup.cost_micros, rollup.price_id, rollup.day) == (expected, price.id, T0.date())


async def test_finish_without_a_started_row_changes_nothing(billing_db: BillingDb) -> None:
    async with transaction(billing_db.sessions) as session:
        assert await finish_rows(session, [a_finish("never-started")]) == []
    assert await _rows(billing_db) == {} and await _rollups(billing_db) == []


async def test_unpriced_model_is_free_and_rolls_up_under_no_price(billing_db: BillingDb) -> None:
    db = billing_db
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start("r", db.keys[0], model="free")], instance_id=INSTANCE)
        await finish_rows(session, [a_finish("r")])
    row = (await _rows(db))["r"]
    assert (row.price_id, row.cost_micros) == (None, 0)
    [rollup] = await _rollups(db)
    assert (rollup.price_id, rollup.requests) == (NO_PRICE, 1)


def test_cost_rounds_half_up_with_integers() -> None:
    price = Price(prompt_micros_per_1k=1, completion_micros_per_1k=3)
    assert cost_micros(499, 0, price) == 0  # 0.499 micro-dollars
    assert cost_micros(500, 0, price) == 1  # 0.5 rounds up
    assert cost_micros(1499, 0, price) == 1
    assert cost_micros(0, 500, price) == 2  # 1.5 rounds up
    assert cost_micros(10**7, 10**7, price) == 40_000
    assert cost_micros(123, 456, None) == 0


async def test_sql_cost_equals_python_cost(billing_db: BillingDb) -> None:
    """The cost written by the finish UPDATE is exactly `cost_micros` for arbitrary numbers."""
    db = billing_db
    rng = random.Random(7)
    price = await _price(db, "tiny", 2_345_678, 7_654_321, T0 - dt.timedelta(days=1))
    cases = {f"r{i:03d}": (rng.randrange(0, 200_000), rng.randrange(0, 50_000)) for i in range(60)}
    cases["edge"] = (999_999, 1)
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start(r, db.keys[0]) for r in cases], instance_id=INSTANCE)
        await finish_rows(
            session,
            [a_finish(r, prompt_tokens=p, completion_tokens=c) for r, (p, c) in cases.items()],
        )
    rows = await _rows(db)
    for request_id, (p, c) in cases.items():
        assert rows[request_id].cost_micros == cost_micros(p, c, price), request_id
    [rollup] = await _rollups(db)
    assert rollup.cost_micros == sum(cost_micros(p, c, price) for p, c in cases.values())


async def test_late_price_never_changes_a_started_request(billing_db: BillingDb) -> None:
    """A price that takes effect between a request's start and its finish does not apply."""
    db = billing_db
    old = await _price(db, "tiny", 1000, 1000, T0 - dt.timedelta(days=1))
    async with transaction(db.sessions) as session:
        await start_rows(session, [a_start("r", db.keys[0])], instance_id=INSTANCE)
    await _price(db, "tiny", 5000, 5000, T0 + dt.timedelta(seconds=1))
    async with transaction(db.sessions) as session:
        await finish_rows(session, [a_finish("r", prompt_tokens=1000, completion_tokens=1000)])
    row = (await _rows(db))["r"]
    assert (row.price_id, row.cost_micros) == (old.id, 2000)


async def _store(db: BillingDb, kind: str) -> LedgerStore:
    """ "session": the portable path; "default": what the gateway uses (asyncpg on PostgreSQL)."""
    if kind == "session":
        return SessionStore(db.sessions)
    return await open_store(db.url, db.sessions)


@pytest.mark.parametrize(
    ("batching", "kind"),
    [(True, "session"), (False, "session"), (True, "default"), (False, "default")],
)
async def test_writer_under_concurrency(billing_db: BillingDb, batching: bool, kind: str) -> None:
    """Concurrent requests through the writer: every row once, duplicates ignored."""
    db = billing_db
    await _price(db, "tiny", 700, 1100, T0 - dt.timedelta(days=1))
    writer = LedgerWriter(await _store(db, kind), instance_id=INSTANCE, batching=batching)
    ids = [f"req_{i:03d}" for i in range(120)]

    async def one(i: int, request_id: str) -> list[bool]:
        pair = db.keys[i % len(db.keys)]
        await asyncio.gather(
            writer.start(a_start(request_id, pair)), writer.start(a_start(request_id, pair))
        )
        finish = a_finish(request_id, prompt_tokens=10, completion_tokens=i)
        return list(await asyncio.gather(writer.finish(finish), writer.finish(finish)))

    results = await asyncio.gather(*(one(i, r) for i, r in enumerate(ids)))
    await writer.close()
    assert all(sorted(pair) == [False, True] for pair in results)
    rows = await _rows(db)
    assert len(rows) == 120 and {r.status for r in rows.values()} == {"ok"}
    async with db.sessions() as session:
        ledger_sum = (
            await session.execute(
                select(
                    func.count(),
                    func.sum(LedgerEntry.completion_tokens),
                    func.sum(LedgerEntry.cost_micros),
                )
            )
        ).one()
        rollup_sum = (
            await session.execute(
                select(
                    func.sum(UsageDaily.requests),
                    func.sum(UsageDaily.completion_tokens),
                    func.sum(UsageDaily.cost_micros),
                )
            )
        ).one()
    assert tuple(int(v) for v in ledger_sum) == tuple(int(v) for v in rollup_sum)
    assert int(ledger_sum[1]) == sum(range(120))
    stats = writer.stats()
    if batching:  # 240 starts and 240 finishes shared far fewer transactions
        assert stats["writes"] == 480 and stats["batches"] < 240
    else:
        assert stats["batches"] == 0


async def test_a_batch_is_one_statement_on_the_wire(postgres_url: str) -> None:
    """A batch of starts, checkpoints and finishes of different requests costs one round
    trip and one commit (the pool sends no reset query on release either); a finish whose
    start is in the same batch still finds its row."""
    upgrade(postgres_url)
    engine = create_engine(postgres_url)
    store = await AsyncpgStore(postgres_url, max_connections=1).open()
    sent: list[str] = []
    try:
        pair = (await seed_accounts(session_factory(engine), accounts=1, keys_per_account=1))[0]
        # The first batches also look up the column types: listen from the mixed one on.
        await store.write_starts([a_start("req_1", pair), a_start("req_2", pair)], instance_id="i")
        await store.write(LedgerBatch.of([a_finish("req_0")]), instance_id="i")
        async with store.pool.acquire() as connection:  # the pool's only one
            connection.add_query_logger(lambda record: sent.append(record.query))
        mixed = LedgerBatch.of(
            [a_start("req_3", pair), RequestProgress("req_2", 7, T0), a_finish("req_1")]
        )
        assert await store.write(mixed, instance_id="i") == {"req_1"}
        assert len(sent) == 1 and sent[0].startswith("WITH")
        own = LedgerBatch.of([a_start("req_4", pair), a_finish("req_4")])
        assert await store.write(own, instance_id="i") == {"req_4"}
        assert len(sent) == 3  # the start first, then the finish that needs its row
        async with session_factory(engine)() as session:
            entries = (await session.execute(select(LedgerEntry))).scalars()
            rows = {row.request_id: row for row in entries}
    finally:
        await store.close()
        await engine.dispose()
    assert {rid: r.status for rid, r in rows.items()} == {
        "req_1": "ok", "req_2": "started", "req_3": "started", "req_4": "ok"
    }  # fmt: skip
    assert rows["req_2"].completion_tokens == 7


async def test_batch_statements_are_planned_once_per_connection(postgres_url: str) -> None:
    """PostgreSQL re-plans a prepared statement on every run while a custom plan looks
    cheaper than the generic one, which it always does for arrays of a few rows: planning
    was 30% of the database's CPU per batch. The store's statements use one generic plan."""
    upgrade(postgres_url)
    engine = create_engine(postgres_url)
    store = await AsyncpgStore(postgres_url, max_connections=1).open()
    try:
        pair = (await seed_accounts(session_factory(engine), accounts=1, keys_per_account=1))[0]
        for i in range(8):  # more than the 5 custom plans PostgreSQL tries before choosing
            await store.write_starts([a_start(f"req_{i}", pair)], instance_id="i")
            await store.write(LedgerBatch.of([a_finish(f"req_{i}")]), instance_id="i")
        async with store.pool.acquire() as connection:  # the pool's only one
            plans = await connection.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE 'WITH%ledger%'"  # not asyncpg's own type queries
            )
    finally:
        await store.close()
        await engine.dispose()
    assert len(plans) == 2  # the starts' statement and the finishes'
    assert [(p["generic_plans"], p["custom_plans"]) for p in plans] == [(8, 0), (8, 0)]


def test_a_batch_keeps_one_checkpoint_per_request_and_none_for_a_finished_one() -> None:
    batch = LedgerBatch.of(
        [
            RequestProgress("a", 3, T0),
            RequestProgress("b", 5, T0),
            RequestProgress("a", 9, T0),
            RequestProgress("a", 4, T0),  # late, behind the furthest
            a_finish("b", completion_tokens=6),
            a_finish("b", completion_tokens=1),  # a second finish of b: the first one wins
        ]
    )
    assert [(p.request_id, p.completion_tokens) for p in batch.progress] == [("a", 9)]
    assert [(f.request_id, f.completion_tokens) for f in batch.finishes] == [("b", 6)]
    assert not batch.finishes_own_start() and not LedgerBatch()


async def test_both_stores_write_the_same_rows(postgres_url: str) -> None:
    """The PostgreSQL fast path and the portable path agree on every column, and the
    rollups both maintain equal the ledger."""
    rng = random.Random(11)
    upgrade(postgres_url)
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        pairs = await seed_accounts(sessions, accounts=2, keys_per_account=2)
        db = BillingDb(postgres_url, engine, sessions, pairs)
        await _price(db, "tiny", 1234, 4321, T0 - dt.timedelta(days=3))
        await _price(db, "tiny", 2000, 5000, T0 + dt.timedelta(hours=5))
        starts = [
            (pairs[i % 4], rng.choice(["tiny", "free"]), rng.randrange(-30, 30)) for i in range(80)
        ]
        statuses = [Status.OK, Status.ERROR, Status.ABORTED]
        ends = [
            (rng.choice(statuses), rng.randrange(0, 5000), rng.randrange(0, 900)) for _ in range(70)
        ]
        for prefix, store in (
            ("a", SessionStore(sessions)),
            ("b", await AsyncpgStore(postgres_url).open()),
        ):
            begun = [
                a_start(
                    f"{prefix}{i:03d}", pair, model=model, received_at=T0 + dt.timedelta(hours=h)
                )
                for i, (pair, model, h) in enumerate(starts)
            ]
            await store.write_starts(begun, instance_id="i")
            await store.write_starts(begun[:10], instance_id="i")  # repeated: a no-op
            finishes = [
                a_finish(f"{prefix}{i:03d}", status=st, prompt_tokens=p, completion_tokens=c)
                for i, (st, p, c) in enumerate(ends)
            ]
            assert len(await store.write_finishes(finishes + finishes[:5])) == 70
            assert await store.write_finishes(finishes[:5]) == set()
            await store.close()
        rows = await _rows(db)
        columns = [c.key for c in LedgerEntry.__table__.columns if c.key != "request_id"]
        for i in range(80):
            a, b = rows[f"a{i:03d}"], rows[f"b{i:03d}"]
            assert [getattr(a, c) for c in columns] == [getattr(b, c) for c in columns], i
        start, end = (T0 - dt.timedelta(days=3)).date(), (T0 + dt.timedelta(days=3)).date()
        async with sessions() as session:
            for group_by in [("account", "key", "model", "day"), ("model",), ()]:
                assert await usage_report(
                    session, start=start, end=end, group_by=group_by
                ) == await usage_from_ledger(session, start=start, end=end, group_by=group_by)
    finally:
        await engine.dispose()
