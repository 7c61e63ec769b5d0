"""A PostgreSQL blip during a request: the finish write is retried until it lands.

Issue #11 item 10. The app runs on a real socket against a per-test PostgreSQL database that
stops accepting connections (and loses the open ones) while a stream is in flight. The
engine is slowed per step so that the stream surely ends inside the blip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from billing.models import LedgerEntry
from core.config import Settings
from core.db import create_engine, session_factory
from tests.access import onboard_developer
from tests.billing.postgres_faults import blip
from tests.live import serve_in_thread

STEP_DELAY_S = 0.02
MAX_TOKENS = 60


@pytest.fixture
def gateway(app: FastAPI, app_settings: Settings) -> Iterator[tuple[str, str]]:
    with serve_in_thread(app) as url:
        yield url, app_settings.database_url


def slow_engine(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = app.state.services.generation.router.routes["tiny"].slots[0].backend
    runner = backend.engine.engine.runner
    real_execute = runner.execute

    def execute(output: object) -> object:
        time.sleep(STEP_DELAY_S)
        return real_execute(output)

    monkeypatch.setattr(runner, "execute", execute)


async def ledger_rows(database_url: str) -> dict[str, LedgerEntry]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.execute(select(LedgerEntry))).scalars()
            return {row.client_request_id or row.request_id: row for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_finish_written_during_a_blip_lands_when_the_database_returns(
    gateway: tuple[str, str], app: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, database_url = gateway
    body = {"model": "tiny", "prompt": "Once", "max_tokens": MAX_TOKENS, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        developer = await onboard_developer(http, admin_key, tier="scale")
        warm = await http.post("/v1/completions", json={"model": "tiny", "prompt": "Hi"},
                               headers=developer.headers)  # fmt: skip
        assert warm.status_code == 200
        slow_engine(app, monkeypatch)
        headers = {**developer.headers, "x-request-id": "req-during-blip"}
        async with http.stream("POST", "/v1/completions", json=body, headers=headers) as stream:
            lines = stream.aiter_lines()
            first = await anext(lines)  # the started row is written; generation runs
            async with blip(database_url):
                rest = [line async for line in lines]
                await asyncio.sleep(0.5)  # the finish failed at least once by now
        events = [orjson.loads(x[6:]) for x in [first, *rest] if x.startswith("data: {")]
        assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]", rest[-3:]
        assert events[-1]["usage"]["completion_tokens"] == MAX_TOKENS

    deadline = time.monotonic() + 15
    while True:
        row = (await ledger_rows(database_url))["req-during-blip"]
        if row.status != "started" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (row.status, row.completion_tokens) == ("ok", MAX_TOKENS)
