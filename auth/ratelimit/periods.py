"""Calendar months (UTC) and the duration format of the reset headers."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime


def month_of(now: float) -> str:
    """The UTC calendar month of a Unix time, as 'YYYY-MM'."""
    return _month_of_hour(math.floor(now / 3600))[0]


def next_month_start(now: float) -> float:
    """Unix time of the first instant of the UTC month after the one containing `now`."""
    return _month_of_hour(math.floor(now / 3600))[1]


# Months start at 00:00 UTC, so every whole UTC hour lies in one month: per hour, not per
# request (every admission asks both), the calendar arithmetic runs once.
@functools.lru_cache(maxsize=8)
def _month_of_hour(hour: int) -> tuple[str, float]:
    moment = datetime.fromtimestamp(hour * 3600, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.strftime("%Y-%m"), datetime(year, month, 1, tzinfo=UTC).timestamp()


def format_duration(seconds: float) -> str:
    """Go-style durations as OpenAI writes its reset headers: `12ms`, `1s`, `1.5s`, `6m0s`.

    Rounded up to whole milliseconds, so a client that waits this long is never early.
    """
    millis = max(0, math.ceil(round(seconds * 1000, 6)))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
