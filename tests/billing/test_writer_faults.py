"""The ledger writer under faults: a bad row fails alone, no error strands a queued write.

Issue #11 items 2 (writer side) and 11. The database refuses a row for real (PostgreSQL
rejects NUL in text); the driver error that once killed the writer task is raised by a
store wrapper in front of a real store (it cannot be provoked on demand).
"""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest
from sqlalchemy import select

from billing.ledger import LedgerBatch
from billing.models import LedgerEntry
from billing.stores import LedgerStore, SessionStore, open_store
from billing.writer import LedgerRowRefused, LedgerWriteFailed, LedgerWriter
from tests.billing.conftest import BillingDb, a_finish, a_start

INSTANCE = "inst_faults"


async def _statuses(db: BillingDb) -> dict[str, str]:
    async with db.sessions() as session:
        rows = (await session.execute(select(LedgerEntry))).scalars()
        return {row.request_id: row.status for row in rows}


async def _store(db: BillingDb, kind: str) -> LedgerStore:
    return SessionStore(db.sessions) if kind == "session" else await open_store(db.url, db.sessions)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["session", "default"])
async def test_a_row_the_database_refuses_fails_only_its_own_request(
    billing_db: BillingDb, kind: str
) -> None:
    db = billing_db
    writer = LedgerWriter(await _store(db, kind), instance_id=INSTANCE)
    good = [a_start(f"req_{i:02d}", db.keys[i % 4]) for i in range(12)]
    evil = dataclasses.replace(a_start("req_evil", db.keys[0]), user="evil\x00")
    # All submitted at once: the first goes out alone, the rest share one batch with evil.
    results = await asyncio.gather(
        *(writer.start(s) for s in [*good[:6], evil, *good[6:]]), return_exceptions=True
    )
    assert isinstance(results[6], LedgerRowRefused), results[6]
    assert [r for i, r in enumerate(results) if i != 6] == [None] * 12
    assert writer.stats()["batches"] < 13  # they did share batches

    finishes = [a_finish(s.request_id, completion_tokens=3) for s in good]
    bad_finish = dataclasses.replace(finishes[3], backend="node\x00")
    done = await asyncio.gather(
        *(writer.finish(f) for f in [*finishes[:3], bad_finish, *finishes[4:]]),
        return_exceptions=True,
    )
    assert isinstance(done[3], LedgerRowRefused), done[3]
    assert [d for i, d in enumerate(done) if i != 3] == [True] * 11
    await writer.close()
    statuses = await _statuses(db)
    assert "req_evil" not in statuses
    assert statuses.pop("req_03") == "started"  # its own finish was refused: the sweeper's
    assert set(statuses.values()) == {"ok"} and len(statuses) == 11


@dataclasses.dataclass
class FailingOnce:
    """A real store whose first write raises `error` after `delay_s` (a driver fault)."""

    store: LedgerStore
    error: BaseException
    delay_s: float = 0.05
    calls: int = 0

    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self.delay_s)  # meanwhile the next write queues up
            raise self.error
        return await self.store.write(batch, instance_id=instance_id)

    async def close(self) -> None:
        await self.store.close()


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("unexpected protocol state"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        KeyError("a bug in the store"),
    ],
    ids=["internal-client-error", "admin-shutdown", "unexpected-bug"],
)
async def test_no_driver_error_strands_a_queued_write(
    billing_db: BillingDb, error: BaseException
) -> None:
    db = billing_db
    writer = LedgerWriter(FailingOnce(await _store(db, "default"), error), instance_id=INSTANCE)
    first = asyncio.ensure_future(writer.start(a_start("req_first", db.keys[0])))
    await asyncio.sleep(0.01)  # the first write is in flight
    queued = asyncio.ensure_future(writer.start(a_start("req_queued", db.keys[1])))
    with pytest.raises(LedgerWriteFailed):
        await asyncio.wait_for(first, 5)
    await asyncio.wait_for(queued, 5)  # written without anyone else arriving
    later = [a_start(f"req_later_{i}", db.keys[2]) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*(writer.start(s) for s in later)), 5)
    await writer.close()
    assert set(await _statuses(db)) == {"req_queued", *(s.request_id for s in later)}
