"""Real PostgreSQL faults on a per-test database (the shared server keeps running).

A *blip*: the database refuses new connections and every open one is terminated, as when
PostgreSQL restarts or a failover happens; it ends when connections are allowed again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from tests.services import postgres_server_url


async def _server() -> asyncpg.Connection:
    url = make_url(postgres_server_url())
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=url.database,
    )  # fmt: skip


async def terminate_connections(database_url: str) -> int:
    """Terminate every open connection to the test database; returns how many."""
    name = make_url(database_url).database
    server = await _server()
    try:
        killed = await server.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await server.close()
    return len(killed)


async def allow_connections(database_url: str, allowed: bool) -> None:
    name = make_url(database_url).database
    server = await _server()
    try:
        await server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    finally:
        await server.close()


@asynccontextmanager
async def blip(database_url: str) -> AsyncIterator[None]:
    """Inside the block the database is unreachable for the app; after it, back."""
    await allow_connections(database_url, False)
    await terminate_connections(database_url)
    try:
        yield
    finally:
        await allow_connections(database_url, True)
