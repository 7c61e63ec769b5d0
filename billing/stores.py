"""Where a batch of ledger writes goes: the portable SQLAlchemy path or a PostgreSQL fast path.

Both implement the same two operations with the same guarantees (billing/ledger.py):
`write_starts` inserts started rows idempotently; `write_finishes` finalises started rows and
adds exactly those to the rollups, atomically, and says which ids transitioned.

`SessionStore` runs `start_rows`/`finish_rows` through SQLAlchemy (SQLite and PostgreSQL):
a transaction per batch, one UPDATE per row. `AsyncpgStore` is what the gateway uses on
PostgreSQL: a whole batch is ONE statement each way (arrays unnested server-side; the
finish is a data-modifying CTE that updates the ledger and upserts the rollups), so a
batch costs one round trip and no BEGIN/COMMIT, on its own small asyncpg pool. The
reconciliation tests run both against the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.ledger import (
    RequestFinish,
    RequestProgress,
    RequestStart,
    finish_rows,
    latest_progress,
    progress_rows,
    start_rows,
)
from core.db import is_sqlite, transaction


class LedgerStore(Protocol):
    async def write_starts(self, starts: Sequence[RequestStart], *, instance_id: str) -> None: ...

    async def write_finishes(self, finishes: Sequence[RequestFinish]) -> set[str]:
        """Finalise; returns the request ids that transitioned from started."""
        ...

    async def write_progress(self, items: Sequence[RequestProgress]) -> None:
        """Checkpoint started rows (final rows are left alone)."""
        ...

    async def close(self) -> None: ...


class SessionStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def write_starts(self, starts: Sequence[RequestStart], *, instance_id: str) -> None:
        async with transaction(self.sessions) as session:
            await start_rows(session, starts, instance_id=instance_id)

    async def write_finishes(self, finishes: Sequence[RequestFinish]) -> set[str]:
        async with transaction(self.sessions) as session:
            done = await finish_rows(session, finishes)
        return {row.request_id for row in done}

    async def write_progress(self, items: Sequence[RequestProgress]) -> None:
        async with transaction(self.sessions) as session:
            await progress_rows(session, items)

    async def close(self) -> None:
        return None


START_SQL = """
INSERT INTO ledger (request_id, client_request_id, account_id, key_id, model, backend,
    prompt_tokens, completion_tokens, cached_prompt_tokens, status, received_at, "user",
    price_id, cost_micros, instance_id)
SELECT r.request_id, r.client_request_id, r.account_id, r.key_id, r.model, r.backend,
    r.prompt_tokens, 0, 0, 'started', r.received_at, r.usr,
    (SELECT p.id FROM prices p
      WHERE p.model = r.model AND p.effective_from <= r.received_at
      ORDER BY p.effective_from DESC LIMIT 1),
    0, $10
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::timestamptz[], $9::text[])
    AS r(request_id, client_request_id, account_id, key_id, model, backend,
         prompt_tokens, received_at, usr)
ORDER BY r.request_id
ON CONFLICT (request_id) DO NOTHING
"""

# Cost: billing/prices.py's formula, in the row's pinned price. The rollup day is the UTC
# date of received_at, as in ledger.py. Rollup rows are upserted in key order (lock order).
FINISH_SQL = """
WITH f AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[],
                         $6::timestamptz[], $7::timestamptz[], $8::int[], $9::text[])
        AS f(request_id, status, prompt_tokens, completion_tokens, cached_prompt_tokens,
             first_token_at, finished_at, latency_ms, backend)
), done AS (
    UPDATE ledger AS l SET
        status = f.status,
        prompt_tokens = f.prompt_tokens,
        completion_tokens = f.completion_tokens,
        cached_prompt_tokens = f.cached_prompt_tokens,
        first_token_at = f.first_token_at,
        finished_at = f.finished_at,
        latency_ms = f.latency_ms,
        backend = COALESCE(f.backend, l.backend),
        cost_micros = COALESCE((
            SELECT (f.prompt_tokens::bigint * p.prompt_micros_per_1k
                    + f.completion_tokens::bigint * p.completion_micros_per_1k + 500) / 1000
            FROM prices p WHERE p.id = l.price_id), 0)
    FROM f
    WHERE l.request_id = f.request_id AND l.status = 'started'
    RETURNING l.request_id, l.account_id, l.key_id, l.model, l.received_at, l.price_id,
              l.prompt_tokens, l.completion_tokens, l.cost_micros
), rolled AS (
    INSERT INTO usage_daily AS u (account_id, day, key_id, model, price_id, requests,
                                  prompt_tokens, completion_tokens, cost_micros)
    SELECT account_id, (received_at AT TIME ZONE 'UTC')::date, key_id, model,
           COALESCE(price_id, 0), count(*), sum(prompt_tokens), sum(completion_tokens),
           sum(cost_micros)
    FROM done
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (account_id, day, key_id, model, price_id) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        cost_micros = u.cost_micros + EXCLUDED.cost_micros
)
SELECT request_id FROM done
"""


PROGRESS_SQL = """
UPDATE ledger AS l SET
    completion_tokens = p.completion_tokens,
    first_token_at = COALESCE(l.first_token_at, p.first_token_at)
FROM unnest($1::text[], $2::int[], $3::timestamptz[])
    AS p(request_id, completion_tokens, first_token_at)
WHERE l.request_id = p.request_id AND l.status = 'started'
"""


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


class AsyncpgStore:
    """The PostgreSQL fast path; `open` it before use."""

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        self.dsn = plain_postgres_dsn(url)
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> AsyncpgStore:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.max_connections, reset=_as_it_is
        )
        return self

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("AsyncpgStore used before open()")
        return self._pool

    async def write_starts(self, starts: Sequence[RequestStart], *, instance_id: str) -> None:
        columns: list[list[object]] = [[] for _ in range(9)]
        for s in starts:
            values = (
                s.request_id, s.client_request_id, s.account_id, s.key_id, s.model, s.backend,
                s.prompt_tokens, s.received_at, s.user,
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await self.pool.execute(START_SQL, *columns, instance_id)

    async def write_finishes(self, finishes: Sequence[RequestFinish]) -> set[str]:
        columns: list[list[object]] = [[] for _ in range(9)]
        seen: set[str] = set()
        for f in finishes:
            if f.request_id in seen:  # one row, one update: the first finish wins
                continue
            seen.add(f.request_id)
            values = (
                f.request_id, f.status.value, f.prompt_tokens, f.completion_tokens,
                f.cached_prompt_tokens, f.first_token_at, f.finished_at, f.latency_ms, f.backend,
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await self.pool.fetch(FINISH_SQL, *columns)
        return {row["request_id"] for row in rows}

    async def write_progress(self, items: Sequence[RequestProgress]) -> None:
        latest = latest_progress(items)
        if latest:
            await self.pool.execute(
                PROGRESS_SQL,
                [p.request_id for p in latest],
                [p.completion_tokens for p in latest],
                [p.first_token_at for p in latest],
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def open_store(
    url: str, sessions: async_sessionmaker[AsyncSession], *, pool_size: int = 8
) -> LedgerStore:
    """The fast path on PostgreSQL (a pool of at most `pool_size`), the portable one elsewhere."""
    if is_sqlite(url):
        return SessionStore(sessions)
    return await AsyncpgStore(url, max_connections=pool_size).open()
