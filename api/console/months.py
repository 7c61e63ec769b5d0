"""Calendar helpers for the usage pages: this UTC month, its days, series with zero days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from billing.reports import UsageRow


def month_bounds(today: dt.date) -> tuple[dt.date, dt.date]:
    first = today.replace(day=1)
    following = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=n) for n in range((end - start).days)]


def tokens(row: Mapping[str, str | int]) -> int:
    return int(row["prompt_tokens"]) + int(row["completion_tokens"])


def daily_tokens(rows: Iterable[UsageRow], start: dt.date, end: dt.date) -> list[tuple[str, int]]:
    """(MM-DD, tokens) for every day in [start, end), zero where nothing was used."""
    by_day = {str(row["day"]): tokens(row) for row in rows}
    return [(d.strftime("%m-%d"), by_day.get(d.isoformat(), 0)) for d in days(start, end)]
