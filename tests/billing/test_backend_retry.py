"""A non-streamed request whose backend fails mid-way runs again on another backend, and
only that run is billed (its client had received nothing of the failed one).

The model has two backends: an upstream that breaks every generation after a few tokens
(no `[DONE]`) and a healthy in-process engine. Requests go one after the other until the
broken upstream has been tried; every one is answered 200 and billed exactly its `usage`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import SecretStr

from api.app import create_app
from auth.tokens import new_admin_key
from core.config import Settings
from migrations.runner import upgrade
from tests.access import onboard_developer
from tests.api.openai_support import ENGINE_OPTIONS
from tests.billing.conftest import ledger_by_client_id
from tests.live import serve_in_thread

BROKEN_AFTER = 3  # tokens the broken upstream sends before its stream breaks


class BrokenUpstream:
    """Healthy by its health check; every generation breaks after BROKEN_AFTER tokens."""

    def __init__(self) -> None:
        self.calls = 0
        self.app = FastAPI()
        self.app.get("/health")(self.health)
        self.app.post("/v1/completions")(self.completions)

    async def health(self) -> dict[str, bool]:
        return {"ok": True}

    async def completions(self, request: Request) -> StreamingResponse:
        self.calls += 1
        prompt_tokens = len((await request.json())["prompt"])

        async def events() -> AsyncIterator[bytes]:
            for generated in range(1, BROKEN_AFTER + 1):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated}
                chunk = {"choices": [{"index": 0, "text": "x"}], "usage": usage}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(events(), media_type="text/event-stream")


async def test_a_request_whose_backend_breaks_mid_way_runs_again_and_bills_one_run(
    sqlite_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    broken = BrokenUpstream()
    admin_key = new_admin_key()
    with serve_in_thread(broken.app) as broken_url:
        backends = [
            {"type": "remote", "name": "broken", "base_url": broken_url},
            {"type": "local", "model": str(tiny_model_dir), "options": ENGINE_OPTIONS},
        ]
        config = tmp_path / "models.yaml"
        # a long health interval: the broken upstream stays ejected once it has failed
        models = [{"id": "tiny", "tokenizer": str(tiny_model_dir), "backends": backends}]
        config.write_text(yaml.safe_dump({"router": {"health_interval_s": 60}, "models": models}))
        settings = Settings(
            database_url=sqlite_url,
            admin_key=SecretStr(admin_key),
            var_dir=tmp_path / "var",
            config_path=config,
        )
        app = create_app(settings)
        usages: dict[str, dict[str, int]] = {}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw", timeout=60
            ) as http:
                developer = await onboard_developer(http, admin_key, tier="scale")
                for i in range(4):  # least loaded, rotating: the broken one's turn comes
                    body = {"model": "tiny", "prompt": f"Attempt {i}", "max_tokens": 6}
                    headers = {**developer.headers, "x-request-id": f"attempt-{i}"}
                    response = await http.post("/v1/completions", json=body, headers=headers)
                    assert response.status_code == 200, response.text
                    usages[f"attempt-{i}"] = response.json()["usage"]
    assert broken.calls == 1  # tried once, failed mid-way, ejected
    rows = await ledger_by_client_id(sqlite_url)
    for request_id, usage in usages.items():
        row = rows[request_id]
        assert (row.status, row.prompt_tokens, row.completion_tokens) == (
            "ok",
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert row.backend != "broken"  # the run that was billed
