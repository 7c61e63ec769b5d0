"""Prices per model and the one cost formula.

Cost of one request, in integer micro-dollars:

    cost_micros = (prompt_tokens * prompt_micros_per_1k
                   + completion_tokens * completion_micros_per_1k + 500) // 1000

i.e. the exact rational price of the request rounded half up to a whole micro-dollar,
computed with integers only. It is rounded once per request; every report, rollup and
invoice line is a plain sum of these per-request costs, so they all agree to the micro-dollar.

A request pays the price in effect at its `received_at` (the newest price whose
`effective_from` is not after it). The price is pinned on the ledger row when the row is
started, and price rows are never updated, so a new price never changes a past cost. New
prices may not take effect in the past for the same reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, ScalarSelect, SQLColumnExpression, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import Price
from core.db import utcnow
from core.errors import InvalidRequest
from core.inputs import check_instant, check_text, column_length

MAX_MICROS_PER_1K = 10**12  # $1M per 1k tokens: far above any real price, far below overflow


def cost_micros(prompt_tokens: int, completion_tokens: int, price: Price | None) -> int:
    """The documented formula (module docstring). No price configured: free."""
    if price is None:
        return 0
    exact_times_1000 = (
        prompt_tokens * price.prompt_micros_per_1k
        + completion_tokens * price.completion_micros_per_1k
    )
    return (exact_times_1000 + 500) // 1000


def cost_sql(
    prompt_tokens: ColumnElement[int] | int,
    completion_tokens: ColumnElement[int] | int,
    prompt_per_1k: SQLColumnExpression[int],
    completion_per_1k: SQLColumnExpression[int],
) -> ColumnElement[int]:
    """The same formula as SQL (integer division on SQLite and PostgreSQL for integers)."""
    return (prompt_tokens * prompt_per_1k + completion_tokens * completion_per_1k + 500) // 1000


def price_id_at(model: str | ColumnElement[str], at: dt.datetime) -> ScalarSelect[int]:
    """Scalar subquery: the id of the price in effect for `model` at `at` (NULL if none)."""
    return (
        select(Price.id)
        .where(Price.model == model, Price.effective_from <= at)
        .order_by(Price.effective_from.desc())
        .limit(1)
        .scalar_subquery()
    )


async def price_at(session: AsyncSession, *, model: str, at: dt.datetime) -> Price | None:
    stmt = (
        select(Price)
        .where(Price.model == model, Price.effective_from <= at)
        .order_by(Price.effective_from.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class PriceCreate:
    model: str
    prompt_micros_per_1k: int
    completion_micros_per_1k: int
    effective_from: dt.datetime | None = None  # None: now


def _validate(new: PriceCreate, now: dt.datetime) -> dt.datetime:
    longest = column_length(Price.model)
    if not new.model or len(new.model) > longest:
        raise InvalidRequest(f"model must be 1 to {longest} characters", param="model")
    check_text(new.model, param="model")
    for param in ("prompt_micros_per_1k", "completion_micros_per_1k"):
        value = getattr(new, param)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{param} must be an integer", param=param)
        if not 0 <= value <= MAX_MICROS_PER_1K:
            raise InvalidRequest(f"{param} must be between 0 and {MAX_MICROS_PER_1K}", param=param)
    effective_from = check_instant(new.effective_from or now, param="effective_from")
    if effective_from < now:
        raise InvalidRequest(
            "effective_from may not be in the past: a new price never changes past costs",
            param="effective_from",
        )
    return effective_from


async def set_price(
    session: AsyncSession, new: PriceCreate, *, now: dt.datetime | None = None
) -> Price:
    """Add a price taking effect at `new.effective_from` (default: now).

    `now` exists for tests and seeding that need prices with a history.
    """
    now = now or utcnow()
    effective_from = _validate(new, now)
    clash = await session.execute(
        select(Price.id).where(Price.model == new.model, Price.effective_from == effective_from)
    )
    if clash.first() is not None:
        raise InvalidRequest(
            f"a price for {new.model!r} already takes effect at {effective_from.isoformat()}",
            param="effective_from",
        )
    price = Price(
        model=new.model,
        prompt_micros_per_1k=new.prompt_micros_per_1k,
        completion_micros_per_1k=new.completion_micros_per_1k,
        effective_from=effective_from,
        created_at=now,
    )
    session.add(price)
    await session.flush()
    return price


async def list_prices(session: AsyncSession, *, model: str | None = None) -> list[Price]:
    stmt = select(Price).order_by(Price.model, Price.effective_from)
    if model is not None:
        stmt = stmt.where(Price.model == model)
    return list((await session.execute(stmt)).scalars())


async def prices_by_id(session: AsyncSession, ids: set[int]) -> dict[int, Price]:
    if not ids:
        return {}
    rows = await session.execute(select(Price).where(Price.id.in_(ids)))
    return {price.id: price for price in rows.scalars()}
