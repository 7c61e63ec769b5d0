"""Recent activity read from the ledger: outcomes since an instant, when each key was last used.

The operator's dashboard and the developer's key list show these; reports and invoices come
from the rollups instead (billing/reports.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import LedgerEntry, Status

# Outcomes the service is to blame for (a client hanging up, `aborted`, is not one).
FAILED_STATUSES = (Status.ERROR.value, Status.INTERRUPTED.value)


@dataclass(frozen=True, slots=True)
class Outcomes:
    finished: int  # requests settled with any final status
    failed: int  # of which `error` or `interrupted`

    @property
    def error_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


async def outcomes_since(session: AsyncSession, *, since: dt.datetime) -> Outcomes:
    failed = func.count().filter(LedgerEntry.status.in_(FAILED_STATUSES))
    query = select(func.count(), failed).where(
        LedgerEntry.received_at >= since, LedgerEntry.status != Status.STARTED.value
    )
    finished, failures = (await session.execute(query)).one()
    return Outcomes(finished=int(finished or 0), failed=int(failures or 0))


async def last_used_by_key(session: AsyncSession, *, account_id: str) -> dict[str, dt.datetime]:
    """key id -> the latest `received_at` of its requests (keys never used are absent)."""
    query = (
        select(LedgerEntry.key_id, func.max(LedgerEntry.received_at))
        .where(LedgerEntry.account_id == account_id)
        .group_by(LedgerEntry.key_id)
    )
    return {key_id: when for key_id, when in (await session.execute(query)).all() if when}
