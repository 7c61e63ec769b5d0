"""Reconciliation through a live gateway: a mixed load, then every count agrees exactly.

Streamed and non-streamed completions and chats, `n > 1`, stop strings, clients that hang
up mid-stream, requests that fail after admission (a dead backend) and requests refused
before it. Afterwards, per request, the ledger row equals the `usage` the client received
(completed requests); rollups == ledger sums; the admin report == rollups; the local
engine's own count of generated tokens == the ledger's completion tokens, aborted included.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import SecretStr
from sqlalchemy import select

from api.app import create_app
from auth.tokens import new_admin_key
from backends.local import LocalBackend
from billing.models import LedgerEntry
from billing.reports import GROUP_FIELDS, usage_from_ledger, usage_report
from core.config import Settings
from core.db import create_engine, session_factory
from migrations.runner import upgrade
from tests.access import Developer, admin_headers, onboard_developer
from tests.api.openai_support import local_model_config
from tests.live import serve_in_thread

PROMPT = "The river flows past the old mill"
PRICE = {"prompt_micros_per_1k": 1234, "completion_micros_per_1k": 5678}


@dataclass
class Metered:
    url: str
    app: FastAPI
    database_url: str
    admin_key: str
    developer: Developer

    def engine_tokens_generated(self) -> int:
        router = self.app.state.services.generation.router
        backend = router.routes["tiny"].slots[0].backend
        assert isinstance(backend, LocalBackend)
        return int(backend.engine.stats().tokens_generated)


HANG_UP_MAX_TOKENS = 900
FLAKY_TOKENS = 3  # what the flaky upstream generates before its stream breaks


def _flaky_upstream() -> FastAPI:
    """Healthy, but every generation breaks after FLAKY_TOKENS tokens (no [DONE])."""
    upstream = FastAPI()

    @upstream.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @upstream.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        prompt_tokens = len((await request.json())["prompt"])

        async def events() -> AsyncIterator[bytes]:
            # Both failing requests get here before either fails (a failure ejects us).
            await asyncio.sleep(0.3)
            for generated in range(1, FLAKY_TOKENS + 1):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated}
                chunk = {"choices": [{"index": 0, "text": "x"}], "usage": usage}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return upstream


def _config(model_dir: Path, flaky_url: str) -> dict[str, Any]:
    config = local_model_config(model_dir)
    flaky = {"type": "remote", "base_url": flaky_url}
    config["models"].append({"id": "broken", "tokenizer": str(model_dir), "backends": [flaky]})
    return config


async def _prepare(url: str, admin_key: str) -> Developer:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        developer = await onboard_developer(client, admin_key, tier="scale")
        for model in ("tiny", "broken"):
            priced = await client.post(
                "/admin/prices", json={"model": model, **PRICE}, headers=admin_headers(admin_key)
            )
            assert priced.status_code == 201, priced.text
        warm = await client.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "warm up", "max_tokens": 1},
            headers=developer.headers,
        )
        assert warm.status_code == 200, warm.text
        return developer


@pytest.fixture
def metered(database_url: str, tiny_model_dir: Path, tmp_path: Path) -> Iterator[Metered]:
    upgrade(database_url)
    stack = contextlib.ExitStack()
    config_path = tmp_path / "models.yaml"
    flaky = stack.enter_context(serve_in_thread(_flaky_upstream()))
    config_path.write_text(yaml.safe_dump(_config(tiny_model_dir, flaky)))
    admin_key = new_admin_key()
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        admin_key=SecretStr(admin_key),
        var_dir=tmp_path / "var",
        config_path=config_path,
        environment="development",
    )
    app = create_app(settings)
    with stack, serve_in_thread(app) as url:
        developer = asyncio.run(_prepare(url, admin_key))
        yield Metered(url, app, database_url, admin_key, developer)


@dataclass
class Sent:
    request_id: str
    kind: str  # "ok", "aborted", "error", "refused"
    usage: dict[str, int] | None = None
    stream: bool = False


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of requests that complete."""
    completions = [
        {"prompt": PROMPT, "max_tokens": 6},
        {"prompt": [PROMPT, "Once upon a time"], "max_tokens": 5, "n": 2, "temperature": 0.9},
        {"prompt": PROMPT, "max_tokens": 12, "stop": [" the", "."]},
        {"prompt": PROMPT, "max_tokens": 9, "stream": True},
        {"prompt": PROMPT, "max_tokens": 7, "n": 3, "stream": True, "temperature": 1.0},
        {"prompt": "A cat", "max_tokens": 10, "stop": ["e"], "stream": True},
        {"prompt": [1, 2, 3, 4, 5], "max_tokens": 4},
    ]
    chats = [
        {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 6},
        {"messages": [{"role": "user", "content": "Tell me"}], "max_tokens": 8, "stream": True},
        {"messages": [{"role": "user", "content": "Two"}], "max_tokens": 5, "n": 2},
    ]
    out = [("/v1/completions", {"model": "tiny", **b}) for b in completions]
    out += [("/v1/chat/completions", {"model": "tiny", **b}) for b in chats]
    for _, body in out:
        if body.get("stream"):
            body["stream_options"] = {"include_usage": True}
    return out


async def _complete(client: httpx.AsyncClient, rid: str, path: str, body: dict[str, Any]) -> Sent:
    headers = {"x-request-id": rid}
    if not body.get("stream"):
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        return Sent(rid, "ok", response.json()["usage"])
    usage = None
    async with client.stream("POST", path, json=body, headers=headers) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line.removeprefix("data: "))
        if chunk.get("usage"):
            usage = chunk["usage"]
    return Sent(rid, "ok", usage)


async def _hang_up(client: httpx.AsyncClient, rid: str) -> Sent:
    """Read two chunks of a long stream, then close the connection."""
    # Long enough that it cannot finish before the hang-up: end-of-text (ids 0, 2) is banned.
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": HANG_UP_MAX_TOKENS,
        "logit_bias": {"0": -100, "2": -100},
        "stream": True,
    }
    async with client.stream(
        "POST", "/v1/completions", json=body, headers={"x-request-id": rid}
    ) as response:
        assert response.status_code == 200
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("data: ")
            if seen == 2:
                break
    return Sent(rid, "aborted")


async def _fail(client: httpx.AsyncClient, rid: str, body: dict[str, Any], kind: str) -> Sent:
    response = await client.post("/v1/completions", json=body, headers={"x-request-id": rid})
    if body.get("stream"):  # it failed after the first token: an error event ends the stream
        assert response.status_code == 200
        assert '"error"' in response.text and "data: [DONE]" not in response.text
    else:
        assert response.status_code >= 400, response.text
    return Sent(rid, kind, stream=bool(body.get("stream")))


async def _load(gw: Metered) -> list[Sent]:
    ids = (f"rc-{i:03d}" for i in itertools.count())
    async with httpx.AsyncClient(
        base_url=gw.url, headers=gw.developer.headers, timeout=120
    ) as client:
        jobs = [_complete(client, next(ids), p, b) for p, b in _bodies() * 2]
        jobs += [_hang_up(client, next(ids)) for _ in range(4)]
        jobs += [
            _fail(client, next(ids), {"model": "broken", "prompt": PROMPT, "stream": s}, "error")
            for s in (False, True)
        ]
        refused: list[dict[str, Any]] = [
            {"model": "tiny", "prompt": PROMPT, "max_tokens": -1},
            {"model": "nope", "prompt": PROMPT},
        ]
        jobs += [_fail(client, next(ids), body, "refused") for body in refused]
        return list(await asyncio.gather(*jobs))


async def _settled_rows(database_url: str) -> dict[str, LedgerEntry]:
    """Ledger rows by client request id, once none is `started` (aborts settle async)."""
    engine = create_engine(database_url)
    try:
        for _ in range(200):
            async with session_factory(engine)() as session:
                rows = list((await session.execute(select(LedgerEntry))).scalars())
            if all(row.status != "started" for row in rows):
                break
            await asyncio.sleep(0.05)
        assert all(row.status != "started" for row in rows)
        by_client = {row.client_request_id: row for row in rows if row.client_request_id}
        assert len(by_client) == len(rows)  # one row per request, no duplicates
        return by_client
    finally:
        await engine.dispose()


async def test_mixed_load_reconciles(metered: Metered) -> None:
    gw = metered
    before = gw.engine_tokens_generated()
    sent = await _load(gw)
    rows = await _settled_rows(gw.database_url)
    rows = {rid: row for rid, row in rows.items() if rid and rid.startswith("rc-")}

    expected_rows = [s for s in sent if s.kind != "refused"]
    assert sorted(rows) == sorted(s.request_id for s in expected_rows)
    for s in expected_rows:
        row = rows[s.request_id]
        assert row.status == s.kind, s
        assert row.account_id == gw.developer.account_id and row.key_id == gw.developer.key_id
        assert (
            row.cost_micros
            == (
                row.prompt_tokens * PRICE["prompt_micros_per_1k"]
                + row.completion_tokens * PRICE["completion_micros_per_1k"]
                + 500
            )
            // 1000
        )
        if s.kind == "ok":
            assert s.usage is not None
            assert (row.prompt_tokens, row.completion_tokens) == (
                s.usage["prompt_tokens"],
                s.usage["completion_tokens"],
            ), s
            assert row.finished_at is not None and row.first_token_at is not None
        elif s.kind == "aborted":
            assert row.prompt_tokens > 0 and 2 <= row.completion_tokens < HANG_UP_MAX_TOKENS
        elif s.stream:  # failed mid-stream: billed the prompt and what was generated
            assert (row.model, row.completion_tokens) == ("broken", FLAKY_TOKENS)
            assert row.prompt_tokens > 0
        else:  # failed (twice: it was run again) before anything reached the client: free
            assert (row.model, row.prompt_tokens, row.completion_tokens) == ("broken", 0, 0)

    tiny_completion = sum(r.completion_tokens for r in rows.values() if r.model == "tiny")
    assert gw.engine_tokens_generated() - before == tiny_completion

    await _reports_agree(gw)


async def _reports_agree(gw: Metered) -> None:
    today = dt.datetime.now(dt.UTC).date()
    start, end = today - dt.timedelta(days=1), today + dt.timedelta(days=2)
    engine = create_engine(gw.database_url)
    try:
        async with session_factory(engine)() as session:
            for size in range(len(GROUP_FIELDS) + 1):
                for group_by in itertools.combinations(GROUP_FIELDS, size):
                    kwargs: dict[str, Any] = {"start": start, "end": end, "group_by": group_by}
                    assert await usage_report(session, **kwargs) == await usage_from_ledger(
                        session, **kwargs
                    ), group_by
            expected = await usage_report(
                session, start=start, end=end, group_by=("account", "key", "model", "day")
            )
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
        report = await client.get(
            "/admin/reports/usage",
            params={"start": str(start), "end": str(end), "group_by": "account,key,model,day"},
            headers=admin_headers(gw.admin_key),
        )
    assert report.status_code == 200 and report.json()["data"] == expected
    assert sum(int(r["cost_micros"]) for r in expected) > 0
