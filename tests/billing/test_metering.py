"""LedgerMeter, the gateway's metering hook, on a real database (no HTTP)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from billing.metering import LedgerMeter
from billing.models import LedgerEntry
from billing.stores import SessionStore, open_store
from billing.writer import LedgerWriter
from core.db import create_engine, session_factory
from core.errors import BackendUnavailable
from tests.billing.conftest import T0, BillingDb


@dataclass(frozen=True)
class Caller:
    account_id: str
    key_id: str


@dataclass(frozen=True)
class Ticket:
    """The fields `api.generation.hooks.Ticket` carries that metering reads."""

    request_id: str
    caller: Caller
    model: str = "tiny"
    prompt_tokens: int = 12
    user: str | None = "end-user-7"
    received_at: dt.datetime = T0


@dataclass(frozen=True)
class Outcome:
    status: str
    prompt_tokens: int
    completion_tokens: int
    finished_at: dt.datetime = field(default=T0 + dt.timedelta(seconds=1))
    cached_tokens: int = 0
    first_token_at: dt.datetime | None = None
    latency_ms: int = 1000
    backend: str | None = "local"
    error_code: str | None = None
    delivered: bool = True


async def _rows(db: BillingDb) -> dict[str, LedgerEntry]:
    async with db.sessions() as session:
        rows = (await session.execute(select(LedgerEntry))).scalars()
        return {str(row.client_request_id): row for row in rows}


@pytest.fixture
async def meter(billing_db: BillingDb) -> AsyncIterator[LedgerMeter]:
    store = await open_store(billing_db.url, billing_db.sessions)
    writer = LedgerWriter(store, instance_id="meter-test")
    yield LedgerMeter(writer)
    await writer.close()


async def test_outcomes_are_billed_as_documented(billing_db: BillingDb, meter: LedgerMeter) -> None:
    caller = Caller(*billing_db.keys[0])
    cases = {
        "ok": (Outcome("ok", 12, 30), (12, 30)),
        # The engine had not reported the prompt yet: the admitted prompt is billed.
        "aborted": (Outcome("aborted", 0, 4), (12, 4)),
        "error": (Outcome("error", 12, 2, error_code="backend_error"), (12, 2)),
        # Our failure, and the client got nothing (a non-streamed request): not billed.
        "undelivered": (
            Outcome("error", 12, 2, error_code="backend_error", delivered=False),
            (0, 0),
        ),
        "refused": (
            Outcome("error", 0, 0, error_code="metering_failed", delivered=False),
            (0, 0),
        ),
        # The client left before anything reached it: the work it asked for is billed.
        "left": (Outcome("aborted", 12, 5, delivered=False), (12, 5)),
    }
    for client_id, (outcome, _) in cases.items():
        ticket = Ticket(client_id, caller, user="end-user-7" + "x" * 1000 * (client_id == "ok"))
        await meter.record(ticket)
        await meter.settle(ticket, outcome)
    assert meter.in_flight == 0
    rows = await _rows(billing_db)
    for client_id, (outcome, billed) in cases.items():
        row = rows[client_id]
        assert row.request_id.startswith("req_") and row.request_id != client_id
        assert (row.status, row.prompt_tokens, row.completion_tokens) == (outcome.status, *billed)
        assert (row.user or "")[:10] == "end-user-7" and len(row.user or "") <= 256
        assert (row.backend, row.account_id) == ("local", caller.account_id)


async def test_a_client_supplied_id_reused_gets_two_rows(
    billing_db: BillingDb, meter: LedgerMeter
) -> None:
    """Replaying an x-request-id must not fold a second request into the first row."""
    caller = Caller(*billing_db.keys[0])
    first, second = Ticket("same-id", caller), Ticket("same-id", caller, prompt_tokens=99)
    await meter.record(first)
    await meter.record(second)
    await meter.settle(second, Outcome("ok", 99, 1))
    await meter.settle(first, Outcome("ok", 12, 3))
    async with billing_db.sessions() as session:
        rows = list((await session.execute(select(LedgerEntry))).scalars())
    assert sorted((r.prompt_tokens, r.completion_tokens, r.status) for r in rows) == [
        (12, 3, "ok"),
        (99, 1, "ok"),
    ]


async def test_cancelled_record_still_finalises(billing_db: BillingDb, meter: LedgerMeter) -> None:
    """A client gone while its row is being written: the row is written and then settled."""
    ticket = Ticket("cancelled", Caller(*billing_db.keys[0]))
    recording = asyncio.create_task(meter.record(ticket))
    await asyncio.sleep(0)
    recording.cancel()
    with pytest.raises(asyncio.CancelledError):
        await recording
    await meter.settle(
        ticket, Outcome("error", 0, 0, error_code="metering_failed", delivered=False)
    )
    row = (await _rows(billing_db))["cancelled"]
    assert (row.status, row.prompt_tokens, row.cost_micros) == ("error", 0, 0)


def _sqlite_workers() -> set[threading.Thread]:
    """aiosqlite's worker threads (one per connection, named after their target)."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_unwritable_ledger_refuses_the_request(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nothing.db'}")
    meter = LedgerMeter(LedgerWriter(SessionStore(session_factory(engine)), instance_id="x"))
    ticket = Ticket("doomed", Caller("acct_x", "key_x"))
    before = _sqlite_workers()
    try:
        with pytest.raises(BackendUnavailable):
            await meter.record(ticket)
        await meter.settle(ticket, Outcome("error", 0, 0))  # nothing recorded: a no-op
        assert meter.in_flight == 0
    finally:
        await engine.dispose()
        # A failed connect stops its aiosqlite thread without waiting for it: let it finish
        # while this test's loop still runs, or it answers a closed loop (a thread error).
        for worker in _sqlite_workers() - before:
            await asyncio.to_thread(worker.join, 5)
