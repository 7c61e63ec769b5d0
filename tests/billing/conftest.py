"""A migrated database with two accounts (two keys each) for the billing tests."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from auth.models import Account, ApiKey
from billing.ledger import RequestFinish, RequestStart
from billing.models import LedgerEntry, Status
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade

# A fixed instant mid-month, far from "now", so tests control every price and day boundary.
T0 = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)


@dataclass
class BillingDb:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keys: list[tuple[str, str]]  # (account_id, key_id)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


async def seed_accounts(
    sessions: async_sessionmaker[AsyncSession], accounts: int, keys_per_account: int
) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    async with transaction(sessions) as session:
        for a in range(accounts):
            account = Account(email=f"dev{a}@example.com", name=f"Dev {a}", tier="free")
            session.add(account)
            await session.flush()
            for k in range(keys_per_account):
                secret = f"sk-test-{account.id}-{k}"
                key = ApiKey(
                    account_id=account.id,
                    name=f"key {k}",
                    key_hash=hashlib.sha256(secret.encode()).hexdigest(),
                    prefix=secret[:10],
                )
                session.add(key)
                await session.flush()
                pairs.append((account.id, key.id))
    return pairs


@pytest.fixture
async def billing_db(database_url: str) -> AsyncIterator[BillingDb]:
    upgrade(database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        keys = await seed_accounts(sessions, accounts=2, keys_per_account=2)
        yield BillingDb(database_url, engine, sessions, keys)
    finally:
        await engine.dispose()


def a_start(
    request_id: str,
    pair: tuple[str, str],
    *,
    model: str = "tiny",
    prompt_tokens: int = 10,
    received_at: dt.datetime = T0,
) -> RequestStart:
    return RequestStart(
        request_id=request_id,
        account_id=pair[0],
        key_id=pair[1],
        model=model,
        prompt_tokens=prompt_tokens,
        received_at=received_at,
        backend="local",
        user="u-1",
    )


def a_finish(
    request_id: str,
    *,
    status: Status = Status.OK,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finished_at: dt.datetime = T0 + dt.timedelta(seconds=2),
) -> RequestFinish:
    return RequestFinish(
        request_id=request_id,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finished_at=finished_at,
        first_token_at=finished_at - dt.timedelta(seconds=1),
        latency_ms=2000,
    )


async def ledger_by_client_id(database_url: str) -> dict[str, LedgerEntry]:
    """Every ledger row of a database, by the x-request-id its client sent."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.execute(select(LedgerEntry))).scalars()
            return {str(row.client_request_id): row for row in rows}
    finally:
        await engine.dispose()
