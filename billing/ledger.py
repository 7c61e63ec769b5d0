"""The usage ledger: one row per request, started before generation, finalised once.

Two writes per request, and for a stream a progress checkpoint now and then:

1. `start_rows`: INSERT … ON CONFLICT (request_id) DO NOTHING, pinning the price in effect
   at `received_at` with a subquery. Repeating it changes nothing.
2. `finish_rows`: in one transaction, UPDATE … WHERE status = 'started' RETURNING … (cost
   computed in SQL from the pinned price), then one upsert of the daily rollups adding
   exactly the rows that transitioned. A second finish matches no started row, so it
   changes neither the ledger nor the rollups.

Between them, `progress_rows` records a started row's completion tokens delivered so far
(UPDATE … WHERE status = 'started', so it never touches a final row). It is what a gateway
crash leaves for the sweeper to bill: `interrupt_rows` bills a row's checkpointed tokens,
and nothing for a row that never had a checkpoint (nothing was delivered).

All take batches, so a group-commit writer (billing/writer.py) can share one transaction
between concurrent requests: a `LedgerBatch` holds starts, checkpoints and finishes of many
requests, written together. Rows and rollup keys are processed in sorted order so that
concurrent batches lock in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Integer, Table, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import NO_PRICE, LedgerEntry, Price, Status, UsageDaily
from billing.prices import cost_sql, price_id_at

LEDGER = cast(Table, LedgerEntry.__table__)
ROLLUP = cast(Table, UsageDaily.__table__)
STALE = LEDGER.alias("stale")
ROLLUP_KEY = ("account_id", "day", "key_id", "model", "price_id")
ROLLUP_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")


@dataclass(frozen=True, slots=True)
class RequestStart:
    """What is known when a request is admitted, before generation."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    prompt_tokens: int
    received_at: dt.datetime
    backend: str | None = None
    user: str | None = None
    client_request_id: str | None = None  # the x-request-id the client saw


@dataclass(frozen=True, slots=True)
class RequestFinish:
    """The request's outcome; tokens are the engine's counts (billed: prompt + generated)."""

    request_id: str
    status: Status
    prompt_tokens: int
    completion_tokens: int
    finished_at: dt.datetime
    cached_prompt_tokens: int = 0
    first_token_at: dt.datetime | None = None
    latency_ms: int | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.status is Status.STARTED:
            raise ValueError("a finish needs a final status")
        if min(self.prompt_tokens, self.completion_tokens, self.cached_prompt_tokens) < 0:
            raise ValueError("token counts are never negative")


@dataclass(frozen=True, slots=True)
class RequestProgress:
    """A stream's progress: the completion tokens its client has been sent so far."""

    request_id: str
    completion_tokens: int
    first_token_at: dt.datetime  # a checkpointed row is one that delivered something

    def __post_init__(self) -> None:
        if self.completion_tokens < 0:
            raise ValueError("token counts are never negative")


def latest_progress(items: Iterable[RequestProgress]) -> list[RequestProgress]:
    """One checkpoint per request (the furthest), in request-id order (the lock order)."""
    furthest: dict[str, RequestProgress] = {}
    for item in items:
        seen = furthest.get(item.request_id)
        if seen is None or item.completion_tokens >= seen.completion_tokens:
            furthest[item.request_id] = item
    return [furthest[rid] for rid in sorted(furthest)]


LedgerWrite = RequestStart | RequestProgress | RequestFinish


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """Writes of many requests that go to the database in one transaction.

    `of` sorts a mixed queue into kinds: one checkpoint per request (the furthest), none for
    a request this batch also finalises (the finish carries the final count, and one
    statement may not update a row twice), and the first finish of a request only.
    """

    starts: Sequence[RequestStart] = ()
    progress: Sequence[RequestProgress] = ()
    finishes: Sequence[RequestFinish] = ()

    @classmethod
    def of(cls, writes: Iterable[LedgerWrite]) -> LedgerBatch:
        starts: list[RequestStart] = []
        progress: list[RequestProgress] = []
        finishes: dict[str, RequestFinish] = {}
        for write in writes:
            if isinstance(write, RequestStart):
                starts.append(write)
            elif isinstance(write, RequestProgress):
                progress.append(write)
            else:
                finishes.setdefault(write.request_id, write)
        checkpoints = [p for p in latest_progress(progress) if p.request_id not in finishes]
        return cls(starts, checkpoints, list(finishes.values()))

    def finishes_own_start(self) -> bool:
        """Does a finish here finalise a row this same batch starts? (Written in one
        statement, the finish would not see the row; its caller did not wait for the start.)"""
        started = {s.request_id for s in self.starts}
        return any(f.request_id in started for f in self.finishes)

    def __bool__(self) -> bool:
        return bool(self.starts or self.progress or self.finishes)


@dataclass(frozen=True, slots=True)
class Finalised:
    """A row that transitioned from started to final in this call."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    day: dt.date
    price_id: int
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int


def _insert(session: AsyncSession, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (both dialects spell it the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _start_statement(session: AsyncSession) -> Any:
    received_at = bindparam("received_at", type_=LEDGER.c.received_at.type)
    model = bindparam("model", type_=LEDGER.c.model.type)
    return (
        _insert(session, LEDGER)
        .values(
            request_id=bindparam("request_id"),
            client_request_id=bindparam("client_request_id"),
            account_id=bindparam("account_id"),
            key_id=bindparam("key_id"),
            model=model,
            backend=bindparam("backend"),
            prompt_tokens=bindparam("prompt_tokens"),
            completion_tokens=0,
            cached_prompt_tokens=0,
            status=Status.STARTED.value,
            received_at=received_at,
            user=bindparam("user"),
            price_id=price_id_at(model, received_at),  # type: ignore[arg-type]
            cost_micros=0,
            instance_id=bindparam("instance_id"),
        )
        .on_conflict_do_nothing(index_elements=["request_id"])
    )


async def start_rows(
    session: AsyncSession, starts: Sequence[RequestStart], *, instance_id: str
) -> None:
    """Insert started rows; a request id that already has a row is left as it is."""
    if not starts:
        return
    params = [
        {
            "request_id": s.request_id,
            "client_request_id": s.client_request_id,
            "account_id": s.account_id,
            "key_id": s.key_id,
            "model": s.model,
            "backend": s.backend,
            "prompt_tokens": s.prompt_tokens,
            "received_at": s.received_at,
            "user": s.user,
            "instance_id": instance_id,
        }
        for s in sorted(starts, key=lambda s: s.request_id)
    ]
    await session.execute(_start_statement(session), params)


RETURNED = (
    LEDGER.c.request_id,
    LEDGER.c.account_id,
    LEDGER.c.key_id,
    LEDGER.c.model,
    LEDGER.c.received_at,
    LEDGER.c.price_id,
    LEDGER.c.prompt_tokens,
    LEDGER.c.completion_tokens,
    LEDGER.c.cost_micros,
)


def _cost_of(prompt: Any, completion: Any) -> Any:
    """Cost at the row's pinned price (a subquery correlated to the updated ledger row)."""
    cost = (
        select(
            cost_sql(prompt, completion, Price.prompt_micros_per_1k, Price.completion_micros_per_1k)
        )
        .where(Price.id == LEDGER.c.price_id)
        .scalar_subquery()
    )
    return func.coalesce(cost, 0)


def _finish_statement() -> Any:
    prompt = bindparam("prompt_tokens", type_=Integer)
    completion = bindparam("completion_tokens", type_=Integer)
    return (
        update(LEDGER)
        .where(
            LEDGER.c.request_id == bindparam("rid"),
            LEDGER.c.status == Status.STARTED.value,
        )
        .values(
            status=bindparam("status"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=bindparam("cached_prompt_tokens"),
            first_token_at=bindparam("first_token_at", type_=LEDGER.c.first_token_at.type),
            finished_at=bindparam("finished_at", type_=LEDGER.c.finished_at.type),
            latency_ms=bindparam("latency_ms", type_=Integer),
            backend=func.coalesce(
                bindparam("backend", type_=LEDGER.c.backend.type), LEDGER.c.backend
            ),
            cost_micros=_cost_of(prompt, completion),
        )
        .returning(*RETURNED)
    )


async def finish_rows(session: AsyncSession, finishes: Sequence[RequestFinish]) -> list[Finalised]:
    """Finalise started rows and add them to the rollups; call inside one transaction.

    Returns the rows that transitioned; a finish whose row is already final (or missing)
    is ignored.
    """
    statement = _finish_statement()
    finalised: list[Finalised] = []
    seen: set[str] = set()
    for f in sorted(finishes, key=lambda f: f.request_id):
        if f.request_id in seen:  # the same request twice in one batch: first one wins
            continue
        seen.add(f.request_id)
        result = await session.execute(
            statement,
            {
                "rid": f.request_id,
                "status": f.status.value,
                "prompt_tokens": f.prompt_tokens,
                "completion_tokens": f.completion_tokens,
                "cached_prompt_tokens": f.cached_prompt_tokens,
                "first_token_at": f.first_token_at,
                "finished_at": f.finished_at,
                "latency_ms": f.latency_ms,
                "backend": f.backend,
            },
        )
        row = result.one_or_none()
        if row is not None:
            finalised.append(_finalised(row))
    await add_to_rollups(session, finalised)
    return finalised


async def progress_rows(session: AsyncSession, items: Sequence[RequestProgress]) -> None:
    """Record checkpoints on rows still `started`; a final row is left as it is."""
    params = [
        {"rid": p.request_id, "completion_tokens": p.completion_tokens, "at": p.first_token_at}
        for p in latest_progress(items)
    ]
    if not params:
        return
    statement = (
        update(LEDGER)
        .where(
            LEDGER.c.request_id == bindparam("rid"),
            LEDGER.c.status == Status.STARTED.value,
        )
        .values(
            completion_tokens=bindparam("completion_tokens", type_=Integer),
            first_token_at=func.coalesce(
                LEDGER.c.first_token_at, bindparam("at", type_=LEDGER.c.first_token_at.type)
            ),
        )
    )
    await session.execute(statement.execution_options(synchronize_session=False), params)


def _finalised(row: Any) -> Finalised:
    received_at: dt.datetime = row.received_at  # UTCDateTime: always aware
    return Finalised(
        request_id=row.request_id,
        account_id=row.account_id,
        key_id=row.key_id,
        model=row.model,
        day=received_at.astimezone(dt.UTC).date(),
        price_id=row.price_id if row.price_id is not None else NO_PRICE,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_micros=row.cost_micros,
    )


async def interrupt_rows(
    session: AsyncSession, *, stale: ColumnElement[bool], now: dt.datetime, limit: int
) -> list[Finalised]:
    """Settle up to `limit` started rows matching `stale` as interrupted, in one UPDATE.

    Billed: the prompt and the completion tokens of the row's last progress checkpoint; a
    row that never had one (a non-streamed request, a stream cut in its first checkpoint
    interval) delivered nothing and is billed nothing. One statement (no read before the
    write) so it neither races a concurrent finish nor needs a read-to-write lock upgrade.
    `stale` is written against `STALE`, an alias of the ledger.
    """
    delivered_prompt = case((LEDGER.c.first_token_at.is_(None), 0), else_=LEDGER.c.prompt_tokens)
    candidates = (
        select(STALE.c.request_id)
        .where(STALE.c.status == Status.STARTED.value, stale)
        .order_by(STALE.c.request_id)
        .limit(limit)
    )
    stmt = (
        update(LEDGER)
        .where(LEDGER.c.request_id.in_(candidates), LEDGER.c.status == Status.STARTED.value)
        .values(
            status=Status.INTERRUPTED.value,
            finished_at=now,
            prompt_tokens=delivered_prompt,
            cost_micros=_cost_of(delivered_prompt, LEDGER.c.completion_tokens),
        )
        .returning(*RETURNED)
    )
    finalised = [_finalised(row) for row in await session.execute(stmt)]
    await add_to_rollups(session, finalised)
    return finalised


def rollup_deltas(rows: Iterable[Finalised]) -> list[dict[str, Any]]:
    """Sum finalised rows per rollup key, sorted by key (a stable lock order)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        key = (r.account_id, r.day, r.key_id, r.model, r.price_id)
        acc = sums.setdefault(key, [0, 0, 0, 0])
        acc[0] += 1
        acc[1] += r.prompt_tokens
        acc[2] += r.completion_tokens
        acc[3] += r.cost_micros
    return [
        dict(zip(ROLLUP_KEY + ROLLUP_SUMS, (*key, *acc), strict=True))
        for key, acc in sorted(sums.items())
    ]


async def add_to_rollups(session: AsyncSession, rows: Iterable[Finalised]) -> None:
    deltas = rollup_deltas(rows)
    if not deltas:
        return
    stmt = _insert(session, ROLLUP)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(ROLLUP_KEY),
        set_={name: ROLLUP.c[name] + stmt.excluded[name] for name in ROLLUP_SUMS},
    )
    await session.execute(stmt, deltas)


def month_usage_reader(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[str, str], Awaitable[int]]:
    """Tokens an account used in a month (`YYYY-MM`, UTC) by the ledger: seeds the limiter.

    Concurrent reads of one account's month share one query: the first burst of a new
    account (every request finds the limiter's month counter missing) must not take a pooled
    connection per request and wait past the pool timeout (503s).
    """
    reading: dict[tuple[str, str], asyncio.Future[int]] = {}

    async def used(account_id: str, month: str) -> int:
        key = (account_id, month)
        future = reading.get(key)
        if future is None:
            future = reading[key] = asyncio.ensure_future(query(account_id, month))
            future.add_done_callback(lambda _: reading.pop(key, None))
        return await asyncio.shield(future)  # one caller giving up must not cancel the rest

    async def query(account_id: str, month: str) -> int:
        year, number = (int(part) for part in month.split("-"))
        start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
        end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=dt.UTC)
        tokens = func.sum(LedgerEntry.prompt_tokens + LedgerEntry.completion_tokens)
        query = select(func.coalesce(tokens, 0)).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.received_at >= start,
            LedgerEntry.received_at < end,
        )
        async with sessions() as session:
            return int(await session.scalar(query) or 0)

    return used
