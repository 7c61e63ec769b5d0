"""One tenant's request that breaks the engine hurts nobody else (issue #11, item 1).

The engine's model runner is made to fail whenever the attacker's request is in the batch
(fault injection, as a torch kernel failing on a value it cannot handle); everything else
is real: the app, the tiny engine, the ledger, the limiter.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml

from backends.local import LocalBackend
from core.config import Settings
from inference.engine.async_engine import TorchAsyncEngine
from inference.engine.scheduler import SchedulerOutput
from tests.access import onboard_developer
from tests.api.openai_support import local_model_config

STEP_DELAY_S = 0.01  # slows each step so that concurrent requests surely share batches


@pytest.fixture
def app_settings(app_settings: Settings, tmp_path: Path, tiny_model_dir: Path) -> Settings:
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump(local_model_config(tiny_model_dir)))
    return app_settings.model_copy(update={"config_path": config})


def local_backend(client: httpx.AsyncClient) -> LocalBackend:
    app = client._transport.app  # type: ignore[attr-defined]
    router = app.state.services.generation.router
    backend = router.routes["tiny"].slots[0].backend
    assert isinstance(backend, LocalBackend)
    return backend


def completion(prompt: str) -> dict[str, object]:
    return {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": 24,
        "temperature": 0,
        "ignore_eos": True,
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_request_that_breaks_the_engine_fails_alone(
    client: httpx.AsyncClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await onboard_developer(client, admin_key, tier="scale")
    mallory = await onboard_developer(client, admin_key, tier="scale")
    prompts = [f"Once upon a time {i}" for i in range(4)]
    alone = []
    for prompt in prompts:  # also loads the engine
        response = await client.post(
            "/v1/completions", json=completion(prompt), headers=alice.headers
        )
        assert response.status_code == 200, response.text
        alone.append(response.json()["choices"][0]["text"])

    backend = local_backend(client)
    assert isinstance(backend.engine, TorchAsyncEngine)
    runner = backend.engine.engine.runner
    real_execute = runner.execute
    shared_with: set[int] = set()

    def execute(output: SchedulerOutput) -> object:
        tenants = {item.seq.group.tenant for item in output.scheduled}
        if mallory.account_id in tenants:
            shared_with.add(len(tenants))
            raise RuntimeError("injected: mallory's request breaks the kernel")
        time.sleep(STEP_DELAY_S)
        return real_execute(output)

    monkeypatch.setattr(runner, "execute", execute)

    async def attack() -> httpx.Response:
        await asyncio.sleep(0.05)  # alice's requests are running by now
        return await client.post(
            "/v1/completions", json=completion("evil"), headers=mallory.headers
        )

    *victims, attacked = await asyncio.gather(
        *(
            client.post("/v1/completions", json=completion(p), headers=alice.headers)
            for p in prompts
        ),
        attack(),
    )
    assert max(shared_with) > 1, "the attack never shared a batch with alice"
    assert attacked.status_code == 500, attacked.text
    assert attacked.json()["error"]["code"] == "generation_failed"
    for response, expected in zip(victims, alone, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == expected
        assert response.json()["usage"]["completion_tokens"] == 24

    # The model was not ejected, and readiness says so.
    [slot] = client._transport.app.state.services.generation.router.routes["tiny"].slots  # type: ignore[attr-defined]
    assert slot.healthy and slot.failures == 0
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["models"] == "ok", ready.text
    after = await client.post("/v1/completions", json=completion("again"), headers=alice.headers)
    assert after.status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readiness_reports_a_dead_engine(client: httpx.AsyncClient, admin_key: str) -> None:
    alice = await onboard_developer(client, admin_key, tier="scale")
    response = await client.post("/v1/completions", json=completion("hi"), headers=alice.headers)
    assert response.status_code == 200
    assert (await client.get("/readyz")).json()["checks"]["models"] == "ok"

    await local_backend(client).engine.shutdown()  # the engine thread is gone
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["models"] == "unavailable"
