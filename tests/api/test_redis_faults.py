"""The gateway when its Redis dies and comes back, or hangs (a throwaway redis-server each).

- Restarted: the first requests after Redis is back succeed. No pooled connection from
  before the restart fails a request, so the limiter's circuit breaker never opens.
- Hung (SIGSTOP): every Redis call on the request path gives up after `redis_timeout_s`;
  requests are answered within that bound, 503 in `fail_closed`, served in `fail_open`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from core.config import Settings
from tests.access import Developer, onboard_developer
from tests.api.test_limits import gateway_config
from tests.auth.conftest import ThrowawayRedis

TIMEOUT_S = 0.3
BODY = {"model": "tiny", "prompt": "hello", "max_tokens": 1}


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.stop()


@asynccontextmanager
async def gateway(
    settings: Settings, admin_key: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Developer]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as http:
            developer = await onboard_developer(http, admin_key, tier="scale")
            warm = await http.post("/v1/completions", json=BODY, headers=developer.headers)
            assert warm.status_code == 200, warm.text  # the model is loaded before any fault
            yield http, developer


def settings_for(
    redis: ThrowawayRedis, mode: str, db_url: str, admin_key: str, tmp_path: Path, model: Path
) -> Settings:
    return Settings(
        database_url=db_url,
        redis_url=redis.url,
        redis_prefix="faults:",
        admin_key=SecretStr(admin_key),
        var_dir=tmp_path / "var",
        config_path=gateway_config(model, tmp_path),
        limiter_failure_mode=mode,  # type: ignore[arg-type]
        redis_timeout_s=TIMEOUT_S,
    )


@pytest.fixture
def database(sqlite_url: str) -> str:
    from migrations.runner import upgrade

    upgrade(sqlite_url)
    return sqlite_url


def store_failures(http: httpx.AsyncClient) -> float:
    app = http._transport.app  # type: ignore[attr-defined]
    registry = app.state.metrics.registry
    total = 0.0
    for metric in registry.collect():
        if metric.name == "sluicegate_ratelimit_store_failures":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_requests_after_a_redis_restart_succeed_at_once(
    mode: str,
    redis_server: ThrowawayRedis,
    database: str,
    admin_key: str,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    """No 503 burst (fail_closed), no window of per-process limits (fail_open): the limiter
    never even notices that Redis was gone."""
    await redis_server.ready()
    settings = settings_for(redis_server, mode, database, admin_key, tmp_path, tiny_model_dir)
    async with gateway(settings, admin_key) as (http, developer):
        redis_server.stop()  # dies with the gateway's connections open, and comes back
        redis_server.start()
        await redis_server.ready()
        statuses = []
        for _ in range(10):
            response = await http.post("/v1/completions", json=BODY, headers=developer.headers)
            statuses.append(response.status_code)
        assert statuses == [200] * 10
        assert store_failures(http) == 0


@pytest.mark.parametrize(("mode", "status"), [("fail_closed", 503), ("fail_open", 200)])
async def test_a_hung_redis_costs_a_request_at_most_the_timeout(
    mode: str,
    status: int,
    redis_server: ThrowawayRedis,
    database: str,
    admin_key: str,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    await redis_server.ready()
    settings = settings_for(redis_server, mode, database, admin_key, tmp_path, tiny_model_dir)
    async with gateway(settings, admin_key) as (http, developer):
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            slowest = 0.0
            deadline = time.monotonic() + 3.0  # several circuit-breaker periods
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = await http.post("/v1/completions", json=BODY, headers=developer.headers)
                slowest = max(slowest, time.monotonic() - started)
                assert response.status_code == status, response.text
                if status == 503:
                    assert response.json()["error"]["code"] == "backend_unavailable"
            assert store_failures(http) > 0
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        # the key-cache version read and the limiter each wait at most TIMEOUT_S
        assert slowest < 2 * TIMEOUT_S + 1.4, slowest  # slack for a loaded machine; was 5 s
        # and once Redis answers again, so does the limiter (after its 1 s breaker at most)
        recovered = time.monotonic() + 3.0
        while True:
            response = await http.post("/v1/completions", json=BODY, headers=developer.headers)
            if response.status_code == 200:
                break
            assert time.monotonic() < recovered, response.text
