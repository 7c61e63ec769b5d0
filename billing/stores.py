"""Where a batch of ledger writes goes: the portable SQLAlchemy path or a PostgreSQL fast path.

Both implement `write(LedgerBatch)` with the same guarantees (billing/ledger.py): started
rows are inserted idempotently, checkpoints recorded on rows still started, and finishes
finalise started rows and add exactly those to the rollups, all in one transaction; it
says which ids transitioned.

`SessionStore` runs `start_rows`/`progress_rows`/`finish_rows` through SQLAlchemy (SQLite
and PostgreSQL): a transaction per batch, one UPDATE per row. `AsyncpgStore` is what the
gateway uses on PostgreSQL: a whole batch, of every kind at once, is ONE statement (arrays
unnested server-side; data-modifying CTEs insert the starts, record the checkpoints, update
the finished rows and upsert their rollups), so a batch costs one round trip, one commit
and no BEGIN/COMMIT, on its own small asyncpg pool. The reconciliation tests run both
against the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import (
    LedgerBatch,
    RequestFinish,
    RequestProgress,
    RequestStart,
    finish_rows,
    progress_rows,
    start_rows,
)
from billing.ledger_sql import write_statement
from core.db import is_sqlite, transaction

# The batch statements are planned once per connection, not on every execution. PostgreSQL
# would re-plan them each time: a custom plan knows the arrays' lengths, so it always looks
# cheaper than the generic one (which assumes 10 rows per unnest), and the plan cache never
# switches. Planning then took 30% of a backend's CPU per batch (perf, batches of 1). The
# generic plan looks the rows up by request id as the custom ones did (EXPLAIN on a ledger
# of 84,000 rows); on a new, empty ledger it scans the started rows' partial index until
# autovacuum's first ANALYZE of the table makes PostgreSQL plan it again.
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan"}


class LedgerStore(Protocol):
    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        """Write the whole batch in one transaction; returns the request ids that
        transitioned from started (to final) in it."""
        ...

    async def close(self) -> None: ...


class BatchWrites:
    """One kind at a time, for callers with only one (tests, tools): each is a batch."""

    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        raise NotImplementedError

    async def write_starts(self, starts: Sequence[RequestStart], *, instance_id: str) -> None:
        await self.write(LedgerBatch(starts=starts), instance_id=instance_id)

    async def write_finishes(self, finishes: Sequence[RequestFinish]) -> set[str]:
        return await self.write(LedgerBatch.of(finishes), instance_id="")

    async def write_progress(self, items: Sequence[RequestProgress]) -> None:
        await self.write(LedgerBatch.of(items), instance_id="")


class SessionStore(BatchWrites):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        async with transaction(self.sessions) as session:
            await start_rows(session, batch.starts, instance_id=instance_id)
            await progress_rows(session, batch.progress)
            done = await finish_rows(session, batch.finishes)
        return {row.request_id for row in done}

    async def close(self) -> None:
        return None


def plain_postgres_dsn(url: str) -> str:
    """`postgresql+asyncpg://…` or `postgresql://…` -> what asyncpg.connect accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _as_it_is(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs before reuse here: nothing.

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release: one more round trip per batch than the batch itself. This
    store leaves no session state behind (single autocommit statements: no SET, LISTEN,
    cursor or advisory lock), and asyncpg still rolls back a connection released inside a
    transaction.
    """
    return None


class AsyncpgStore(BatchWrites):
    """The PostgreSQL fast path; `open` it before use."""

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        self.dsn = plain_postgres_dsn(url)
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> AsyncpgStore:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.max_connections,
            reset=_as_it_is,
            server_settings=GENERIC_PLANS,
        )
        return self

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("AsyncpgStore used before open()")
        return self._pool

    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        if batch.finishes_own_start():  # the finish must see the row: start it first
            await self.write(LedgerBatch(batch.starts, batch.progress), instance_id=instance_id)
            return await self.write(LedgerBatch(finishes=batch.finishes), instance_id=instance_id)
        if not batch:
            return set()
        arguments: list[object] = []
        if batch.starts:
            arguments += [*_start_columns(batch.starts), instance_id]
        if batch.progress:
            arguments += _progress_columns(batch.progress)
        if batch.finishes:
            arguments += _finish_columns(batch.finishes)
        statement = write_statement(bool(batch.starts), bool(batch.progress), bool(batch.finishes))
        rows = await self.pool.fetch(statement, *arguments)
        return {row["request_id"] for row in rows}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _start_columns(starts: Sequence[RequestStart]) -> list[list[object]]:
    return _columns(
        (s.request_id, s.client_request_id, s.account_id, s.key_id, s.model, s.backend,
         s.prompt_tokens, s.received_at, s.user)
        for s in starts
    )  # fmt: skip


def _progress_columns(items: Sequence[RequestProgress]) -> list[list[object]]:
    return _columns((p.request_id, p.completion_tokens, p.first_token_at) for p in items)


def _finish_columns(finishes: Sequence[RequestFinish]) -> list[list[object]]:
    return _columns(
        (f.request_id, f.status.value, f.prompt_tokens, f.completion_tokens,
         f.cached_prompt_tokens, f.first_token_at, f.finished_at, f.latency_ms, f.backend)
        for f in finishes
    )  # fmt: skip


def _columns(rows: Iterable[tuple[object, ...]]) -> list[list[object]]:
    """Rows to columns: the statement unnests one array per column."""
    return [list(column) for column in zip(*rows, strict=True)]


async def open_store(
    url: str, sessions: async_sessionmaker[AsyncSession], *, pool_size: int = 8
) -> LedgerStore:
    """The fast path on PostgreSQL (a pool of at most `pool_size`), the portable one elsewhere."""
    if is_sqlite(url):
        return SessionStore(sessions)
    return await AsyncpgStore(url, max_connections=pool_size).open()
