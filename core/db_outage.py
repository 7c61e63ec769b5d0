"""Telling a database that cannot take work right now from one that refused a statement.

A request that meets an outage deserves a 503 with `Retry-After` (the same request will
succeed later); a statement the database refused for its content is the caller's or our
bug. The outages:

- the server refuses connections: `too many clients` / too many for the role (SQLSTATE 53300)
  and every other lack of resources (class 53), it is starting or stopping (57P01-57P03),
  a connection failed or was lost (class 08, asyncpg's `ConnectionDoesNotExistError`);
- nothing answers: a refused, reset or timed-out socket (`ConnectionError`, `TimeoutError`,
  which SQLAlchemy passes through unwrapped from the driver's connect);
- our own pool is exhausted: SQLAlchemy's `TimeoutError` after `database_pool_timeout_s`.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa

# What a database call may raise that `is_outage` sorts: the app maps these in one place.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
)
OUTAGE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")
_UNREACHABLE = (sa.TimeoutError, ConnectionError, TimeoutError, asyncpg.PostgresConnectionError)


def is_outage(error: BaseException) -> bool:
    """Does `error` (or what it wraps) say the database cannot take work right now?"""
    for cause in _chain(error):
        if isinstance(cause, _UNREACHABLE):
            return True
        if isinstance(cause, sa.DBAPIError) and cause.connection_invalidated:
            return True
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str) and state.startswith(OUTAGE_SQLSTATES):
            return True
    return False


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps: SQLAlchemy's `.orig`, the driver's `__cause__`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
