"""A database that refuses connections, cannot be reached, or a pool with no free connection
is a 503 in OpenAI's shape with Retry-After on every route, never a 500 (issue #11, item 8).

Seen first when four gateway workers (30 + 8 connections each) met other PostgreSQL clients:
`too many clients` reached the client as a plain `Internal Server Error`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from api.services import Services
from cli.main import warn_if_over_connection_budget
from core.config import Settings
from core.db import create_engine
from core.db_budget import ServerConnections, over_budget, server_connections
from tests.access import Developer, admin_headers, onboard_developer
from tests.conftest import _admin_execute

ROLE_CONNECTION_LIMIT = 3
WAITLIST = {"email": "ada@example.com", "name": "Ada", "use_case": "Testing outages."}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("server_error", "database_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after-ms"]) >= 1000


async def every_kind_of_route(
    http: httpx.AsyncClient, admin_key: str, key: str
) -> list[httpx.Response]:
    """A public route, a developer route, an admin route and the generation fast path."""
    completion = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}
    return [
        await http.post("/v1/waitlist", json=WAITLIST),
        await http.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}),
        await http.get("/admin/accounts", headers=admin_headers(admin_key)),
        await http.post(
            "/v1/completions", json=completion, headers={"Authorization": f"Bearer {key}"}
        ),
    ]


def settings_for(url: str, admin_key: str, tmp_path: Path, **overrides: object) -> Settings:
    # No metering or limits: no background task may take a connection the test counts on.
    return Settings(
        database_url=url,
        admin_key=SecretStr(admin_key),
        var_dir=tmp_path / "var",
        metering_enabled=False,
        limits_enabled=False,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def limited_role(postgres_url: str, migrated_db_url: str) -> AsyncIterator[str]:
    """`migrated_db_url` as a role of its own that PostgreSQL lets open 3 connections."""
    role = f"sg_limited_{uuid.uuid4().hex[:10]}"
    database = make_url(migrated_db_url).database
    await _admin_execute(
        postgres_url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {ROLE_CONNECTION_LIMIT}"
    )
    await _admin_execute(postgres_url, f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    for grant in (
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ):
        await _admin_execute(migrated_db_url, grant)
    try:
        yield make_url(migrated_db_url).set(username=role).render_as_string(hide_password=False)
    finally:
        await _admin_execute(migrated_db_url, f"DROP OWNED BY {role}")
        await _admin_execute(postgres_url, f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
        await _admin_execute(postgres_url, f"DROP ROLE {role}")


async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def take_every_connection(url: str) -> list[asyncpg.Connection]:
    """Open connections as the role until PostgreSQL refuses one (`too many connections`)."""
    held: list[asyncpg.Connection] = []
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    for _ in range(ROLE_CONNECTION_LIMIT + 1):
        try:
            held.append(await asyncpg.connect(plain))
        except asyncpg.TooManyConnectionsError:
            return held
    raise AssertionError("PostgreSQL never refused a connection")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgres_refusing_connections_is_503_with_retry_after(
    limited_role: str, admin_key: str, tmp_path: Path
) -> None:
    app = create_app(settings_for(limited_role, admin_key, tmp_path))
    async for http in started(app):
        developer: Developer = await onboard_developer(http, admin_key)
        fresh = await http.post("/v1/keys", json={"name": "fresh"}, headers=developer.headers)
        assert fresh.status_code == 201, fresh.text  # not in the key cache yet
        services: Services = app.state.services
        await services.engine.dispose()  # the pool keeps no connection of its own now
        held = await take_every_connection(limited_role)
        try:
            for response in await every_kind_of_route(http, admin_key, fresh.json()["key"]):
                assert_unavailable(response)
        finally:
            for connection in held:
                await connection.close()
        # the same requests succeed once PostgreSQL takes connections again
        listed = await http.get("/v1/keys", headers=developer.headers)
        assert listed.status_code == 200, listed.text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_exhausted_pool_is_503_after_the_pool_timeout(
    migrated_db_url: str, admin_key: str, tmp_path: Path
) -> None:
    settings = settings_for(
        migrated_db_url,
        admin_key,
        tmp_path,
        database_pool_size=1,
        database_max_overflow=0,
        database_pool_timeout_s=0.5,
    )
    app = create_app(settings)
    async for http in started(app):
        developer = await onboard_developer(http, admin_key)
        fresh = await http.post("/v1/keys", json={"name": "fresh"}, headers=developer.headers)
        assert fresh.status_code == 201, fresh.text
        services: Services = app.state.services
        async with services.engine.connect():  # the pool's only connection, held busy
            began = time.monotonic()
            responses = await every_kind_of_route(http, admin_key, fresh.json()["key"])
            waited = time.monotonic() - began
        for response in responses:
            assert_unavailable(response)
        assert waited >= 4 * 0.5  # each waited for the pool timeout, then gave up
        listed = await http.get("/v1/keys", headers=developer.headers)
        assert listed.status_code == 200, listed.text


async def test_an_unreachable_database_is_503(admin_key: str, tmp_path: Path) -> None:
    """Nothing listens on the port: the driver's ConnectionRefusedError, not wrapped."""
    nobody = "postgresql://postgres@127.0.0.1:1/none"
    app = create_app(settings_for(nobody, admin_key, tmp_path))
    async for http in started(app):
        for response in await every_kind_of_route(http, admin_key, "sk-" + "x" * 40):
            assert_unavailable(response)


def test_pool_sizes_are_settings_with_one_rule(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1/x",
        database_pool_size=3,
        database_max_overflow=2,
        ledger_pool_size=4,
        database_pool_timeout_s=1.5,
    )
    assert settings.connections_per_process == 3 + 2 + 4
    assert settings.database_pool.timeout_s == 1.5
    unmetered = settings.model_copy(update={"metering_enabled": False})
    assert unmetered.connections_per_process == 5
    # The defaults leave room for four workers and other clients on a stock PostgreSQL (100).
    assert 4 * Settings().connections_per_process <= 100 - 3 - 20


async def test_the_connection_budget_is_read_from_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            server = await server_connections(AsyncSession(bind=connection))
    finally:
        await engine.dispose()
    direct = await asyncpg.connect(postgres_url)
    try:
        assert server.max_connections == int(await direct.fetchval("SHOW max_connections"))
    finally:
        await direct.close()
    stock = ServerConnections(max_connections=100, superuser_reserved=3)
    assert (
        over_budget(per_process=Settings().connections_per_process, workers=4, server=stock) is None
    )
    # the pools before #11: 10 + 20 + 8 connections a process; four workers took 152 of 100
    problem = over_budget(per_process=38, workers=4, server=stock)
    assert problem is not None and "152" in problem and "87" in problem


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_serve_warns_when_its_workers_do_not_fit(
    migrated_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fits = Settings(database_url=migrated_db_url)
    warn_if_over_connection_budget(fits, workers=2)
    assert "warning" not in capsys.readouterr().out
    greedy = Settings(database_url=migrated_db_url, database_pool_size=40)
    warn_if_over_connection_budget(greedy, workers=4)
    assert "SLUICEGATE_DATABASE_POOL_SIZE" in capsys.readouterr().out
