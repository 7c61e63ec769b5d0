"""The gateway's default configuration serves SmolLM2-135M-Instruct once it is fetched, and
a chat completion answers the README's question in English, stopping at the end of the turn."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.config import Settings
from inference.checkpoints.loader import load_tokenizer
from tests.access import onboard_developer

pytestmark = pytest.mark.real_model


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url  # one database is enough here: this is about the model


async def test_default_config_answers_with_smollm2(
    app_settings: Settings, admin_key: str, smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICEGATE_MODEL_DIR", str(smollm2_path.parent))
    app = create_app(app_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=300) as http:
            developer = await onboard_developer(http, admin_key)
            listed = await http.get("/v1/models", headers=developer.headers)
            assert [m["id"] for m in listed.json()["data"]] == ["tiny", "smollm2-135m-instruct"]
            response = await http.post(
                "/v1/chat/completions",
                headers=developer.headers,
                json={
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    "max_tokens": 64,
                    "temperature": 0,
                },
            )
            conversation = [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Opposite of hot?"},
                {"role": "assistant", "content": "Cold."},
                {"role": "user", "content": "And of up? 🦙"},
            ]
            second = await http.post(
                "/v1/chat/completions",
                headers=developer.headers,
                json={"model": "smollm2-135m-instruct", "messages": conversation, "max_tokens": 8},
            )
    assert second.status_code == 200, second.text
    tokenizer = load_tokenizer(smollm2_path)  # the prompt is the whole rendered conversation
    rendered = tokenizer.apply_chat_template(conversation)
    assert second.json()["usage"]["prompt_tokens"] == len(tokenizer.encode(rendered))
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "Paris" in choice["message"]["content"]
    assert "<|im_end|>" not in choice["message"]["content"]
