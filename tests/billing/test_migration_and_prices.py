"""0002_billing up and down on both databases; price validation."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import inspect

from billing.prices import PriceCreate, list_prices, price_at, set_price
from core.db import create_engine, transaction
from core.errors import InvalidRequest
from migrations.runner import downgrade, upgrade
from tests.billing.conftest import T0, BillingDb

BILLING_TABLES = {"prices", "ledger", "usage_daily", "billing_instances"}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    upgrade(database_url, "0002_billing")
    assert await _tables(database_url) >= BILLING_TABLES
    downgrade(database_url, "0001_foundation")
    tables = await _tables(database_url)
    assert not BILLING_TABLES & tables and "accounts" in tables
    upgrade(database_url)
    assert await _tables(database_url) >= BILLING_TABLES


async def test_prices_history_and_lookup(billing_db: BillingDb) -> None:
    sessions = billing_db.sessions
    async with transaction(sessions) as session:
        first = await set_price(session, PriceCreate("tiny", 10, 20), now=T0)
        later = await set_price(
            session,
            PriceCreate("tiny", 30, 40, effective_from=T0 + dt.timedelta(days=3)),
            now=T0,
        )
    async with sessions() as session:
        assert await price_at(session, model="tiny", at=T0 - dt.timedelta(seconds=1)) is None
        assert (await price_at(session, model="tiny", at=T0)).id == first.id  # type: ignore[union-attr]
        at_later = await price_at(session, model="tiny", at=T0 + dt.timedelta(days=4))
        assert at_later is not None and at_later.id == later.id
        assert [p.id for p in await list_prices(session, model="tiny")] == [first.id, later.id]
        assert await list_prices(session, model="other") == []


@pytest.mark.parametrize(
    ("new", "param"),
    [
        (PriceCreate("tiny", -1, 0), "prompt_micros_per_1k"),
        (PriceCreate("tiny", 0, 10**13), "completion_micros_per_1k"),
        (PriceCreate("", 1, 1), "model"),
        (PriceCreate("tiny", 1, 1, effective_from=T0 - dt.timedelta(seconds=1)), "effective_from"),
        (PriceCreate("tiny", 1, 1, effective_from=dt.datetime(2030, 1, 1)), "effective_from"),
        (PriceCreate("tiny", 1, 1, effective_from=T0), "effective_from"),  # same instant twice
    ],
)
async def test_bad_prices(billing_db: BillingDb, new: PriceCreate, param: str) -> None:
    async with transaction(billing_db.sessions) as session:
        await set_price(session, PriceCreate("tiny", 5, 5, effective_from=T0), now=T0)
    with pytest.raises(InvalidRequest) as info:
        async with transaction(billing_db.sessions) as session:
            await set_price(session, new, now=T0)
    assert info.value.param == param
