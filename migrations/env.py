"""Alembic environment: async engines, URL from the caller or the app's settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from core.db import create_engine, is_sqlite
from migrations.tables import load_metadata

config = context.config
target_metadata = load_metadata()


def _database_url() -> str:
    """`migrations.runner` passes the URL as an attribute; the alembic CLI can pass it as
    `-x database_url=…`."""
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "database_url"
    )
    if url:
        return str(url)
    from core.config import Settings  # only when nobody named a URL

    return Settings().database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    sqlite = (
        is_sqlite(url) if url else connection is not None and connection.dialect.name == "sqlite"
    )
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=sqlite,  # SQLite alters tables by copying them
        compare_type=True,
        literal_binds=connection is None,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online(_database_url()))
