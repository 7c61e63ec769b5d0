"""`api.inference_server --engine vllm` wiring, against the fake `vllm` package (no GPU here)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.inference_server import create_server_app, engine_options, parse_args
from backends.local import open_engine

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FAKES))
    yield
    for name in [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture
async def http(fake_vllm: None, tiny_model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    args = parse_args(
        ["--model", str(tiny_model_dir), "--engine", "vllm", "--tensor-parallel-size", "2"]
    )
    options = engine_options(args)
    assert options == {"tensor_parallel_size": 2}
    engine = open_engine(args.model, engine="vllm", options=options)
    app = create_server_app(engine, model_name="tiny", api_key="k")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer k"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://server", headers=headers
        ) as client:
            yield client


async def test_vllm_engine_serves_completions_and_chat(http: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 4, "logprobs": 1}
    completion = await http.post("/v1/completions", json=body)
    assert completion.status_code == 200, completion.text
    data = completion.json()
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len(data["choices"][0]["logprobs"]["tokens"]) == 4
    chat = await http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
    stats = (await http.get("/stats")).json()
    assert stats["tokens_generated"] >= 6


def test_engine_options_follow_the_engine() -> None:
    torch_args = parse_args(["--num-kv-blocks", "64", "--max-model-len", "512"])
    assert engine_options(torch_args) == {"num_kv_blocks": 64, "max_model_len": 512}
    with pytest.raises(SystemExit, match="tensor-parallel-size"):
        engine_options(parse_args(["--tensor-parallel-size", "4"]))  # torch has no TP
    extra = parse_args(["--engine", "vllm", "--option", "enforce_eager=true", "--option", "x=1"])
    assert engine_options(extra) == {"enforce_eager": True, "x": 1}
