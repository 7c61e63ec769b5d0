"""Limits hold across gateway processes that share Redis (real uvicorn workers, real sockets)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from core.config import Settings
from migrations.runner import upgrade
from tests.access import Developer, admin_headers, onboard_developer
from tests.api.test_limits import ROOMY, gateway_config
from tests.gateway_process import ROOT, STARTUP_TIMEOUT_S, answers, free_port, stop_group


@contextmanager
def gateway(env: dict[str, str], *, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`uvicorn --workers N` in its own process group; yields (base URL, process)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    # long keep-alive: the client must not race the server closing an idle connection
    command += ["--log-level", "warning", "--timeout-keep-alive", "120"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not answers(url):
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)
        yield url, process
    finally:
        stop_group(process, timeout_s=20)


@pytest.fixture
def gateway_env(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    admin_key: str,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> dict[str, str]:
    upgrade(postgres_url)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        SLUICEGATE_REDIS_PREFIX=redis_prefix,
        SLUICEGATE_ADMIN_KEY=admin_key,
        SLUICEGATE_VAR_DIR=str(tmp_path / "var"),
        SLUICEGATE_CONFIG=str(gateway_config(tiny_model_dir, tmp_path)),
        # production: every worker loads its model at boot, not inside the burst below
        SLUICEGATE_ENVIRONMENT="production",
        SLUICEGATE_LIMITER_SLOT_LEASE_S="2",
        # These tests are about exactness across processes, not about a slow Redis: a burst
        # of 400 requests into 4 workers on a loaded 2-core machine can hold a worker's event
        # loop past the 0.5 s default, which the limiter (rightly) takes for an unreachable
        # Redis, and fail_open would then admit past the limit.
        SLUICEGATE_REDIS_TIMEOUT_S="5",
        SLUICEGATE_LIMITER_FAILURE_MODE="fail_closed",
    )
    return env


async def onboard(http: httpx.AsyncClient, admin_key: str, **limits: int) -> Developer:
    name = f"w{time.monotonic_ns() % 10**9}"
    body = {"name": name, **{**ROOMY, **limits}}
    created = await http.post("/admin/tiers", json=body, headers=admin_headers(admin_key))
    assert created.status_code == 201, created.text
    developer = await onboard_developer(http, admin_key, tier=name)
    return developer


async def fire(http: httpx.AsyncClient, developer: Developer, count: int) -> list[httpx.Response]:
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 1}

    async def one() -> httpx.Response:
        return await http.post("/v1/completions", json=body, headers=developer.headers)

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_four_workers_share_one_request_limit(
    gateway_env: dict[str, str], admin_key: str
) -> None:
    pool = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    with gateway(gateway_env, workers=4) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=pool) as http:
            developer = await onboard(http, admin_key, requests_per_minute=60)
            results = await fire(http, developer, 400)
            admitted = [r for r in results if r.status_code == 200]
            refused = [r for r in results if r.status_code != 200]
            assert len(admitted) == 60, {r.status_code for r in refused}
            # every admission saw a different count: the 60 slots were taken one at a time
            remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
            assert remaining == list(range(60))
            for response in refused:
                assert response.status_code == 429
                error = response.json()["error"]
                assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
                assert "Limit 60, Used 60, Requested 1." in error["message"]
                assert 1 <= int(response.headers["retry-after"]) <= 60
                assert response.headers["x-ratelimit-limit-requests"] == "60"
                assert response.headers["x-ratelimit-remaining-requests"] == "0"

            # a tier change reaches every worker within seconds
            other = await onboard(http, admin_key, requests_per_minute=1000)
            assert all(r.status_code == 200 for r in await fire(http, other, 8))
            tier = (await http.get("/v1/keys", headers=other.headers)).headers
            assert tier["x-ratelimit-limit-requests"] == "1000"
            changed = await http.patch(
                f"/admin/accounts/{other.account_id}",
                json={"tier": await tier_named(http, admin_key, requests_per_minute=8)},
                headers=admin_headers(admin_key),
            )
            assert changed.status_code == 200, changed.text
            started = time.monotonic()
            while True:
                statuses = {r.status_code for r in await fire(http, other, 12)}
                if statuses == {429}:
                    break
                assert time.monotonic() - started < 6, statuses
                await asyncio.sleep(0.2)


async def tier_named(http: httpx.AsyncClient, admin_key: str, **limits: int) -> str:
    name = f"n{time.monotonic_ns() % 10**9}"
    body = {"name": name, **{**ROOMY, **limits}}
    created = await http.post("/admin/tiers", json=body, headers=admin_headers(admin_key))
    assert created.status_code == 201, created.text
    return name


async def test_killed_process_gives_its_slot_back_within_the_lease(
    gateway_env: dict[str, str], admin_key: str
) -> None:
    lease = float(gateway_env["SLUICEGATE_LIMITER_SLOT_LEASE_S"])
    doomed_env = {**gateway_env, "SLUICEGATE_ENVIRONMENT": "development"}
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 1}
    stream_body = {"model": "tiny", "prompt": "once", "max_tokens": 900, "stream": True}
    # the survivor: this process, same database, Redis and settings as the doomed one
    app = create_app(Settings(**settings_of(gateway_env)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        with gateway(doomed_env, workers=1) as (doomed_url, doomed):
            async with (
                httpx.AsyncClient(base_url=doomed_url, timeout=60) as doomed_http,
                httpx.AsyncClient(transport=transport, base_url="http://survivor") as http,
            ):
                developer = await onboard(http, admin_key, max_concurrent_requests=1)
                for warm in (doomed_http, http):  # load the model now, not while holding the slot
                    ok = await warm.post("/v1/completions", json=body, headers=developer.headers)
                    assert ok.status_code == 200, ok.text
                admitted_at = time.monotonic()
                async with doomed_http.stream(
                    "POST", "/v1/completions", json=stream_body, headers=developer.headers
                ) as stream:
                    assert stream.status_code == 200
                    assert (await anext(stream.aiter_lines())).startswith("data: ")
                    os.killpg(doomed.pid, signal.SIGKILL)  # dies holding the slot, never settles
                    doomed.wait(timeout=20)
                first = await http.post("/v1/completions", json=body, headers=developer.headers)
                assert first.status_code == 429, first.text
                assert "concurrent requests" in first.json()["error"]["message"]
                while True:
                    retry = await http.post("/v1/completions", json=body, headers=developer.headers)
                    if retry.status_code == 200:
                        break
                    assert retry.status_code == 429
                    assert time.monotonic() - admitted_at < lease + 1.5
                    await asyncio.sleep(0.1)


def settings_of(env: dict[str, str]) -> dict[str, Any]:
    return {
        "database_url": env["DATABASE_URL"],
        "redis_url": env["REDIS_URL"],
        "redis_prefix": env["SLUICEGATE_REDIS_PREFIX"],
        "admin_key": SecretStr(env["SLUICEGATE_ADMIN_KEY"]),
        "var_dir": Path(env["SLUICEGATE_VAR_DIR"]),
        "config_path": Path(env["SLUICEGATE_CONFIG"]),
        "limiter_slot_lease_s": float(env["SLUICEGATE_LIMITER_SLOT_LEASE_S"]),
    }
