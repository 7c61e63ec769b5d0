"""The key cache: no query for a hot key; revocation/suspension reaches every process in time.

With Redis the shared version counter is what makes other processes drop their caches (we
check that, on a second gateway running as its own process, well inside the 5 s TTL).
Without Redis the TTL alone bounds staleness.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from api.app import create_app
from api.services import Services
from core.config import Settings
from tests.access import Developer, admin_headers, onboard_developer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only here: the shape that runs several gateway processes (the logic under
    test does not depend on the database; SQLite runs it in the other suites)."""
    return postgres_url


@pytest.fixture
def app_settings(app_settings: Settings, redis_url: str, redis_prefix: str) -> Settings:
    """This module's apps share Redis (under a per-test prefix) and poll it every 0.2 s."""
    return app_settings.model_copy(
        update={"redis_url": redis_url, "redis_prefix": redis_prefix, "key_version_poll_s": 0.2}
    )


@pytest.fixture
def second_gateway(app_settings: Settings, admin_key: str) -> Iterator[str]:
    """Another gateway *process* on the same database and Redis; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": app_settings.database_url,
        "REDIS_URL": str(app_settings.redis_url),
        "SLUICEGATE_REDIS_PREFIX": app_settings.redis_prefix,
        "SLUICEGATE_ADMIN_KEY": admin_key,
        "SLUICEGATE_KEY_VERSION_POLL_S": "0.2",
    }
    # Started the way operators start it: `sluicegate serve` (the CLI's serve command).
    command = [str(Path(sys.executable).parent / "sluicegate"), "serve", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env={**env, "SLUICEGATE_LOG_LEVEL": "warning"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the second gateway exited"
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


async def seconds_until_refused(
    http: httpx.AsyncClient, key: str, *, status: int, limit_s: float = 5.0
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s + 1:
        response = await http.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == status:
            return time.monotonic() - started
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"still accepted after {limit_s + 1} s")


async def test_hot_key_costs_no_query(
    app: FastAPI, client: httpx.AsyncClient, developer: Developer
) -> None:
    services: Services = app.state.services
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    await services.authenticator.authenticate(developer.key)  # warm
    event.listen(services.engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(200):
            principal = await services.authenticator.authenticate(developer.key)
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", count)
    assert statements == []
    assert principal.account_id == developer.account_id and principal.tier == "free"


async def test_revocation_reaches_another_process_via_redis(
    client: httpx.AsyncClient, developer: Developer, second_gateway: str
) -> None:
    spare = (await client.post("/v1/keys", headers=developer.headers)).json()
    async with httpx.AsyncClient(base_url=second_gateway) as other:
        warm = await other.get("/v1/keys", headers={"Authorization": f"Bearer {spare['key']}"})
        assert warm.status_code == 200  # now cached there, for up to 5 s
        revoked = await client.delete(f"/v1/keys/{spare['id']}", headers=developer.headers)
        assert revoked.status_code == 200
        took = await seconds_until_refused(other, spare["key"], status=401)
    assert took < 2.5, f"the TTL, not the shared version, expired the entry ({took:.2f}s)"


async def test_suspension_reaches_another_process_via_redis(
    client: httpx.AsyncClient, developer: Developer, second_gateway: str, admin_key: str
) -> None:
    async with httpx.AsyncClient(base_url=second_gateway) as other:
        assert (await other.get("/v1/keys", headers=developer.headers)).status_code == 200
        await client.patch(
            f"/admin/accounts/{developer.account_id}",
            json={"status": "suspended"},
            headers=admin_headers(admin_key),
        )
        took = await seconds_until_refused(other, developer.key, status=403)
    assert took < 2.5


@pytest.fixture
async def two_apps_without_redis(
    app_settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = app_settings.model_copy(update={"redis_url": None, "key_cache_ttl_s": 0.5})
    clients = []
    apps = [create_app(settings), create_app(settings)]
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        for app in apps:
            transport = httpx.ASGITransport(app=app)
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        yield clients[0], clients[1]
        for http in clients:
            await http.aclose()


async def test_without_redis_the_ttl_bounds_staleness(
    two_apps_without_redis: tuple[httpx.AsyncClient, httpx.AsyncClient], admin_key: str
) -> None:
    first, second = two_apps_without_redis
    developer = await onboard_developer(first, admin_key)
    assert (await second.get("/v1/keys", headers=developer.headers)).status_code == 200
    await first.delete(f"/admin/keys/{developer.key_id}", headers=admin_headers(admin_key))
    # The revoking process knows at once; the other one within its TTL (0.5 s here).
    assert (await first.get("/v1/keys", headers=developer.headers)).status_code == 401
    took = await seconds_until_refused(second, developer.key, status=401, limit_s=0.5)
    assert took <= 0.6
