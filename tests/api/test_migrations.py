"""Alembic: upgrade from empty, downgrade to empty, and models == migrated schema."""

from __future__ import annotations

import itertools
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from core.db import create_engine
from migrations.runner import downgrade, upgrade
from migrations.tables import load_metadata

FOUNDATION_TABLES = {
    "tiers",
    "accounts",
    "waitlist_applications",
    "api_keys",
    "admin_credentials",
    "audit_log",
}


async def run_sync(url: str, work: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, load_metadata()))


async def test_upgrade_from_empty_and_downgrade_to_empty(database_url: str) -> None:
    assert await run_sync(database_url, table_names) == set()
    upgrade(database_url)
    tables = await run_sync(database_url, table_names)
    assert tables >= FOUNDATION_TABLES
    assert tables == set(load_metadata().tables)

    downgrade(database_url, "base")
    assert await run_sync(database_url, table_names) == set()
    upgrade(database_url)  # and back up again: downgrades leave nothing behind
    assert await run_sync(database_url, table_names) == tables


async def test_models_match_the_migrated_schema(migrated_db_url: str) -> None:
    assert await run_sync(migrated_db_url, schema_diff) == []


async def test_tiers_are_seeded(migrated_db_url: str) -> None:
    def tiers(connection: Connection) -> list[tuple[Any, ...]]:
        query = text(
            "SELECT name, requests_per_minute, tokens_per_minute, max_concurrent_requests,"
            " tokens_per_month FROM tiers ORDER BY requests_per_minute"
        )
        return [tuple(row) for row in connection.execute(query)]

    rows = await run_sync(migrated_db_url, tiers)
    assert [row[0] for row in rows] == ["free", "standard", "scale"]
    for earlier, later in itertools.pairwise(rows):
        assert all(a < b for a, b in zip(earlier[1:], later[1:], strict=True))


async def test_foundation_revision_alone_up_and_down(database_url: str) -> None:
    upgrade(database_url, "0001_foundation")
    assert await run_sync(database_url, table_names) == FOUNDATION_TABLES
    downgrade(database_url, "base")
    assert await run_sync(database_url, table_names) == set()
