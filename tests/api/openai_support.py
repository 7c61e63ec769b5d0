"""A live gateway for the OpenAI-SDK tests: real app, uvicorn socket, tiny local engine.

Started once per test module (loading the engine costs seconds), with a developer on the
`scale` tier (so limits never interfere), a key scoped to another model, and the admin key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.generation.service import GenerationService
from auth.tokens import new_admin_key
from backends.local import LocalBackend
from core.config import Settings
from migrations.runner import upgrade
from tests.access import Developer, admin_headers, onboard_developer
from tests.live import serve_in_thread

ENGINE_OPTIONS = {"max_num_seqs": 16, "num_kv_blocks": 512, "max_num_batched_tokens": 256}


def local_model_config(model_dir: Path, **extra: Any) -> dict[str, Any]:
    local = {"type": "local", "model": str(model_dir), "options": ENGINE_OPTIONS}
    return {"models": [{"id": "tiny", "backends": [local]}], **extra}


@dataclass
class Gateway:
    url: str
    app: FastAPI
    developer: Developer
    scoped_key: str  # a working key that may use only the model "someone-elses-model"
    admin_key: str

    @property
    def key(self) -> str:
        return self.developer.key

    @property
    def generation(self) -> GenerationService:
        service: GenerationService = self.app.state.services.generation
        return service

    def engine_running(self) -> int:
        """Requests running in the gateway's local engine right now."""
        router = self.generation.router
        assert router is not None
        backend = router.routes["tiny"].slots[0].backend
        assert isinstance(backend, LocalBackend)
        return backend.engine.stats().running


async def _onboard(url: str, admin_key: str) -> tuple[Developer, str]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        developer = await onboard_developer(client, admin_key, tier="scale")
        scoped = await client.post(
            "/v1/keys",
            json={"allowed_models": ["someone-elses-model"]},
            headers=developer.headers,
        )
        assert scoped.status_code == 201, scoped.text
        # The first generation loads the engine; do it here, not inside a test's timing.
        warm = await client.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "warm up", "max_tokens": 1},
            headers=developer.headers,
        )
        assert warm.status_code == 200, warm.text
        return developer, scoped.json()["key"]


def sqlite_gateway(directory: Path, config: dict[str, Any]) -> tuple[Settings, str]:
    """Settings of a development gateway serving `config` on a migrated SQLite database in
    `directory`, with a new admin key (returned beside them)."""
    config_path = directory / "models.yaml"
    config_path.write_text(yaml.safe_dump(config))
    database_url = f"sqlite:///{directory / 'gateway.db'}"
    upgrade(database_url)
    admin_key = new_admin_key()
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        admin_key=SecretStr(admin_key),
        var_dir=directory / "var",
        config_path=config_path,
        environment="development",
    )
    return settings, admin_key


@contextmanager
def live_gateway(directory: Path, config: dict[str, Any]) -> Iterator[Gateway]:
    settings, admin_key = sqlite_gateway(directory, config)
    app = create_app(settings)
    with serve_in_thread(app) as url:
        developer, scoped = asyncio.run(_onboard(url, admin_key))
        yield Gateway(url, app, developer, scoped, admin_key)


def admin(gateway: Gateway) -> dict[str, str]:
    return admin_headers(gateway.admin_key)
