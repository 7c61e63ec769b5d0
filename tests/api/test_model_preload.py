"""Models load and warm up as the app starts (`preload_models`, what `sluicegate serve` sets);
/readyz is 503 until they are ready, and the first request finds them loaded."""

from __future__ import annotations

import asyncio
import threading

import httpx
from fastapi import FastAPI

from api.app import create_app
from api.generation.service import GenerationService
from api.services import Services
from backends.catalog import LocalBackendSpec, default_engine_factory, load_config
from core.config import Settings
from inference.protocol import InferenceEngine

LOAD_TIMEOUT_S = 120.0


async def _wait_ready(http: httpx.AsyncClient) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + LOAD_TIMEOUT_S
    while True:
        ready = await http.get("/readyz")
        if ready.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return ready
        await asyncio.sleep(0.05)


async def test_readyz_is_503_while_models_load(app: FastAPI, client: httpx.AsyncClient) -> None:
    release = threading.Event()

    def slow_factory(spec: LocalBackendSpec) -> InferenceEngine:
        release.wait(LOAD_TIMEOUT_S)
        return default_engine_factory(spec)

    services: Services = app.state.services
    service = GenerationService(load_config(None), engine_factory=slow_factory)
    original, services.generation = services.generation, service
    try:
        service.start_in_background()
        loading = await client.get("/readyz")
        assert loading.status_code == 503
        assert loading.json()["checks"] == {"database": "ok", "models": "unavailable"}
        assert (await client.get("/healthz")).status_code == 200
        release.set()
        ready = await _wait_ready(client)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "models": "ok"}
        assert not service.loading
    finally:
        release.set()
        await service.close()
        services.generation = original


async def test_preload_loads_models_before_any_request(app_settings: Settings) -> None:
    app = create_app(app_settings.model_copy(update={"preload_models": True}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            ready = await _wait_ready(http)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["models"] == "ok"
            services: Services = app.state.services
            assert services.generation is not None
            assert services.generation.router is not None and services.generation.router.started
