"""A gateway killed with SIGKILL mid-stream: after a restart its row is `interrupted`, once.

Two real `sluicegate serve` processes in turn on one database: the first is killed while
streaming; the second (a new instance id) sweeps the dead one's started row once its
heartbeat is stale. Nothing is missing, nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from auth.tokens import new_admin_key
from billing.models import LedgerEntry
from billing.reports import GROUP_FIELDS, UsageRow, usage_from_ledger, usage_report
from core.db import create_engine, session_factory
from migrations.runner import upgrade
from tests.access import Developer, admin_headers, onboard_developer
from tests.api.openai_support import local_model_config
from tests.billing.conftest import ledger_by_client_id

ROOT = Path(__file__).resolve().parents[2]
PRICE = {"prompt_micros_per_1k": 1000, "completion_micros_per_1k": 3000}
STALE_AFTER_S = 1.5
CHECKPOINT_S = 0.2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).parent / "sluicegate"),
            "serve",
            "--port",
            str(self.port),
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def gateway_env(
    database_url: str, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[dict[str, str]]:
    upgrade(database_url)
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump(local_model_config(tiny_model_dir)))
    yield {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "SLUICEGATE_ADMIN_KEY": new_admin_key(),
        "SLUICEGATE_CONFIG": str(config),
        "SLUICEGATE_VAR_DIR": str(tmp_path / "var"),
        "SLUICEGATE_LOG_LEVEL": "warning",
        "SLUICEGATE_LEDGER_HEARTBEAT_S": "0.2",
        "SLUICEGATE_LEDGER_STALE_AFTER_S": str(STALE_AFTER_S),
        "SLUICEGATE_LEDGER_SWEEP_INTERVAL_S": "0.3",
        "SLUICEGATE_LEDGER_CHECKPOINT_S": str(CHECKPOINT_S),
    }


async def _onboard(url: str, admin_key: str) -> Developer:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        developer = await onboard_developer(client, admin_key, tier="scale")
        priced = await client.post(
            "/admin/prices", json={"model": "tiny", **PRICE}, headers=admin_headers(admin_key)
        )
        assert priced.status_code == 201, priced.text
        return developer


def _complete(url: str, developer: Developer, request_id: str) -> dict[str, int]:
    response = httpx.post(
        f"{url}/v1/completions",
        json={"model": "tiny", "prompt": "Before the crash", "max_tokens": 4},
        headers={**developer.headers, "x-request-id": request_id},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    usage: dict[str, int] = response.json()["usage"]
    return usage


@dataclass
class Received:
    """Completion tokens a client had received, and when (monotonic seconds)."""

    tokens: list[tuple[float, int]] = field(default_factory=list)

    def by(self, moment: float) -> int:
        return max((n for at, n in self.tokens if at <= moment), default=0)

    @property
    def total(self) -> int:
        return self.tokens[-1][1] if self.tokens else 0


def _stream_then_kill(
    gateway: GatewayProcess, developer: Developer, *, after_s: float
) -> tuple[Received, float]:
    """Read a stream for `after_s`, then SIGKILL its gateway; (what arrived, kill time)."""
    body = {
        "model": "tiny",
        "prompt": "A stream that never ends",
        "max_tokens": 900,
        "logit_bias": {"0": -100, "2": -100},  # no end-of-text: it is still running when killed
        "logprobs": 1,  # every chunk lists its tokens: the client counts what it received
        "stream": True,
    }
    headers = {**developer.headers, "x-request-id": "crash-stream"}
    received = Received()
    with httpx.stream(
        "POST", f"{gateway.url}/v1/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        started = time.monotonic()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            count = len(chunk["choices"][0]["logprobs"]["tokens"])
            received.tokens.append((time.monotonic(), received.total + count))
            # On a fast machine the 900 tokens can all arrive within `after_s`: kill it
            # well before its end, or the stream would finish and leave nothing to sweep.
            if time.monotonic() - started >= after_s or received.total >= 600:
                break
        killed_at = time.monotonic()
        gateway.kill()
    return received, killed_at


async def _reports_equal_ledger(database_url: str) -> list[UsageRow]:
    """Every grouping of the rollups equals the ledger; returns the all-time total row."""
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=2), today + dt.timedelta(days=2)
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            for size in range(len(GROUP_FIELDS) + 1):
                for group_by in itertools.combinations(GROUP_FIELDS, size):
                    from_rollups = await usage_report(
                        session, start=start, end=end, group_by=group_by
                    )
                    from_ledger = await usage_from_ledger(
                        session, start=start, end=end, group_by=group_by
                    )
                    assert from_rollups == from_ledger, group_by
            return await usage_report(session, start=start, end=end, group_by=())
    finally:
        await engine.dispose()


def _wait_for_status(database_url: str, client_id: str, status: str, limit_s: float) -> LedgerEntry:
    deadline = time.monotonic() + limit_s
    while True:
        row = asyncio.run(ledger_by_client_id(database_url)).get(client_id)
        if row is not None and row.status == status:
            return row
        assert time.monotonic() < deadline, f"{client_id}: {row and row.status}, not {status}"
        time.sleep(0.2)


def test_sigkill_mid_stream_leaves_one_interrupted_row(
    gateway_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "gateway.log"
    first = GatewayProcess(gateway_env, log)
    try:
        developer = asyncio.run(_onboard(first.url, gateway_env["SLUICEGATE_ADMIN_KEY"]))
        before = _complete(first.url, developer, "before-crash")
        received, killed_at = _stream_then_kill(first, developer, after_s=1.5)
    finally:
        first.stop()
    rows = asyncio.run(ledger_by_client_id(database_url))
    assert rows["crash-stream"].status == "started"  # the dead process could not finalise it
    assert rows["before-crash"].status == "ok"

    second = GatewayProcess(gateway_env, log)
    try:
        crashed = _wait_for_status(database_url, "crash-stream", "interrupted", 20 + STALE_AFTER_S)
        after = _complete(second.url, developer, "after-restart")
    finally:
        second.stop()

    rows = asyncio.run(ledger_by_client_id(database_url))
    assert sorted(rows) == ["after-restart", "before-crash", "crash-stream"]
    assert crashed.prompt_tokens > 0 and crashed.finished_at is not None
    # Billed: what was delivered by the last checkpoint (every CHECKPOINT_S). Everything the
    # client had a second before the kill was checkpointed (slack for the batched write);
    # nothing beyond what the gateway had sent (the client reads a few frames behind it).
    assert received.by(killed_at - 1.0) <= crashed.completion_tokens
    assert crashed.completion_tokens <= received.total + 50
    assert (
        crashed.cost_micros
        == (crashed.prompt_tokens * 1000 + crashed.completion_tokens * 3000 + 500) // 1000
    )
    assert rows["crash-stream"].status == "interrupted"  # swept once, never re-finalised
    assert rows["after-restart"].status == "ok"
    [total] = asyncio.run(_reports_equal_ledger(database_url))
    assert total["requests"] == 3
    assert total["prompt_tokens"] == (
        before["prompt_tokens"] + crashed.prompt_tokens + after["prompt_tokens"]
    )
    assert total["completion_tokens"] == (
        before["completion_tokens"] + crashed.completion_tokens + after["completion_tokens"]
    )
