"""Usage reports and invoices, read from the daily rollups.

A report covers whole UTC days [start, end). Rows are grouped by any combination of
`account`, `key`, `model`, `day`, `month` and carry `requests`, `prompt_tokens`,
`completion_tokens` and `cost_micros`, all integers (sums of per-request costs, see
billing/prices.py). `usage_from_ledger` computes the same rows from the ledger itself; the
reconciliation tests hold the two equal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, Select, SQLColumnExpression, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import NO_PRICE, LedgerEntry, Price, Status, UsageDaily
from billing.prices import prices_by_id
from core.errors import InvalidRequest
from core.inputs import check_day

GROUP_FIELDS: dict[str, str] = {
    "account": "account_id",
    "key": "key_id",
    "model": "model",
    "day": "day",
    "month": "month",
}
SUM_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_micros")
MAX_RANGE_DAYS = 3660

UsageRow = dict[str, str | int]
Unit = Literal["day", "month"]


def parse_group_by(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`account,model,day` -> ("account", "model", "day"); empty -> () (one total row)."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(part.strip() for part in parts if part.strip())
    for name in names:
        if name not in GROUP_FIELDS:
            raise InvalidRequest(
                f"group_by: unknown field {name!r}; use any of {', '.join(GROUP_FIELDS)}",
                param="group_by",
            )
    if len(set(names)) != len(names):
        raise InvalidRequest("group_by names a field twice", param="group_by")
    return names


def parse_day(value: str | None, *, param: str) -> dt.date:
    if not value:
        raise InvalidRequest(f"{param} is required (YYYY-MM-DD)", param=param)
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{param} must be a date like 2026-11-01", param=param) from None
    return check_day(day, param=param)


def validate_range(start: dt.date, end: dt.date) -> None:
    """[start, end) must hold at least one day and at most ~10 years."""
    if end < start:
        raise InvalidRequest("end is before start", param="end")
    if end == start:
        raise InvalidRequest(
            "the range [start, end) is empty: end must be after start", param="end"
        )
    if (end - start).days > MAX_RANGE_DAYS:
        raise InvalidRequest(f"the range may span at most {MAX_RANGE_DAYS} days", param="end")


def parse_range(start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    first, last = parse_day(start, param="start"), parse_day(end, param="end")
    validate_range(first, last)
    return first, last


def parse_month(value: str | None, *, param: str = "month") -> tuple[dt.date, dt.date]:
    """`2026-11` -> (2026-11-01, 2026-12-01)."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", value or "")
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise InvalidRequest(f"{param} must look like 2026-11", param=param)
    first = check_day(dt.date(int(match[1]), int(match[2]), 1), param=param)
    following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following


def _calendar_text(
    dialect: str, column: SQLColumnExpression[Any], unit: Unit, *, timestamp: bool
) -> ColumnElement[str]:
    """`YYYY-MM-DD` / `YYYY-MM` of a date column or of a UTC timestamp column, as text."""
    if dialect == "postgresql":
        source = func.timezone("UTC", column) if timestamp else column
        return func.to_char(source, "YYYY-MM-DD" if unit == "day" else "YYYY-MM")
    # SQLite stores dates as 'YYYY-MM-DD' and UTC timestamps as 'YYYY-MM-DD HH:MM:SS…'.
    return func.substr(column, 1, 10 if unit == "day" else 7)


def _grouped(
    columns: dict[str, SQLColumnExpression[Any]], group_by: tuple[str, ...], sums: list[Any]
) -> Select[Any]:
    keys: list[Any] = [columns[name].label(GROUP_FIELDS[name]) for name in group_by]
    stmt = select(*keys, *sums)
    if keys:
        stmt = stmt.group_by(*keys).order_by(*keys)
    return stmt


def _as_rows(result: Any, group_by: tuple[str, ...]) -> list[UsageRow]:
    names = [GROUP_FIELDS[name] for name in group_by] + list(SUM_FIELDS)
    rows = []
    for record in result:
        row: UsageRow = dict(zip(names, record, strict=True))
        for name in SUM_FIELDS:
            row[name] = int(row[name] or 0)
        rows.append(row)
    return rows


async def usage_report(
    session: AsyncSession,
    *,
    start: dt.date,
    end: dt.date,
    group_by: tuple[str, ...],
    account_id: str | None = None,
) -> list[UsageRow]:
    """Usage over [start, end) from the rollups, optionally for one account only."""
    validate_range(start, end)
    dialect = session.get_bind().dialect.name
    columns: dict[str, SQLColumnExpression[Any]] = {
        "account": UsageDaily.account_id,
        "key": UsageDaily.key_id,
        "model": UsageDaily.model,
        "day": _calendar_text(dialect, UsageDaily.day, "day", timestamp=False),
        "month": _calendar_text(dialect, UsageDaily.day, "month", timestamp=False),
    }
    sums = [
        cast(func.sum(getattr(UsageDaily, name)), BigInteger).label(name) for name in SUM_FIELDS
    ]
    stmt = _grouped(columns, group_by, sums).where(UsageDaily.day >= start, UsageDaily.day < end)
    if account_id is not None:
        stmt = stmt.where(UsageDaily.account_id == account_id)
    rows = _as_rows(await session.execute(stmt), group_by)
    return rows


async def usage_from_ledger(
    session: AsyncSession,
    *,
    start: dt.date,
    end: dt.date,
    group_by: tuple[str, ...],
    account_id: str | None = None,
) -> list[UsageRow]:
    """The same report summed straight from the finalised ledger rows (for reconciliation)."""
    validate_range(start, end)
    dialect = session.get_bind().dialect.name
    columns: dict[str, SQLColumnExpression[Any]] = {
        "account": LedgerEntry.account_id,
        "key": LedgerEntry.key_id,
        "model": LedgerEntry.model,
        "day": _calendar_text(dialect, LedgerEntry.received_at, "day", timestamp=True),
        "month": _calendar_text(dialect, LedgerEntry.received_at, "month", timestamp=True),
    }
    sums = [
        cast(func.count(), BigInteger).label("requests"),
        *(
            cast(func.sum(getattr(LedgerEntry, name)), BigInteger).label(name)
            for name in SUM_FIELDS[1:]
        ),
    ]
    midnight = dt.time(tzinfo=dt.UTC)
    stmt = _grouped(columns, group_by, sums).where(
        LedgerEntry.status != Status.STARTED.value,
        LedgerEntry.received_at >= dt.datetime.combine(start, midnight),
        LedgerEntry.received_at < dt.datetime.combine(end, midnight),
    )
    if account_id is not None:
        stmt = stmt.where(LedgerEntry.account_id == account_id)
    rows = _as_rows(await session.execute(stmt), group_by)
    return rows


@dataclass(slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_micros += other.cost_micros


@dataclass(slots=True)
class PriceLine:
    """The part of a model's usage billed at one price (None: the model had no price)."""

    price_id: int | None
    prompt_micros_per_1k: int
    completion_micros_per_1k: int
    effective_from: dt.datetime | None
    usage: Totals


@dataclass(slots=True)
class InvoiceLine:
    model: str
    usage: Totals
    prices: list[PriceLine] = field(default_factory=list)


@dataclass(slots=True)
class Invoice:
    account_id: str
    month: str
    lines: list[InvoiceLine]
    total: Totals


async def invoice(session: AsyncSession, *, account_id: str, month: str) -> Invoice:
    """One line per model (split by price when it changed in the month) plus the total."""
    first, following = parse_month(month)
    sums = [cast(func.sum(getattr(UsageDaily, name)), BigInteger) for name in SUM_FIELDS]
    stmt = (
        select(UsageDaily.model, UsageDaily.price_id, *sums)
        .where(
            UsageDaily.account_id == account_id,
            UsageDaily.day >= first,
            UsageDaily.day < following,
        )
        .group_by(UsageDaily.model, UsageDaily.price_id)
    )
    groups = (await session.execute(stmt)).all()
    prices = await prices_by_id(session, {g.price_id for g in groups if g.price_id != NO_PRICE})
    lines: dict[str, InvoiceLine] = {}
    total = Totals()
    for model, price_id, *values in groups:
        usage = Totals(*(int(v) for v in values))
        line = lines.setdefault(model, InvoiceLine(model=model, usage=Totals()))
        line.prices.append(_price_line(prices.get(price_id), usage))
        line.usage.add(usage)
        total.add(usage)
    for line in lines.values():
        line.prices.sort(key=lambda p: p.effective_from or dt.datetime.min.replace(tzinfo=dt.UTC))
    return Invoice(
        account_id=account_id,
        month=month,  # validated by parse_month
        lines=[lines[model] for model in sorted(lines)],
        total=total,
    )


def _price_line(price: Price | None, usage: Totals) -> PriceLine:
    if price is None:
        return PriceLine(None, 0, 0, None, usage)
    return PriceLine(
        price.id,
        price.prompt_micros_per_1k,
        price.completion_micros_per_1k,
        price.effective_from,
        usage,
    )
