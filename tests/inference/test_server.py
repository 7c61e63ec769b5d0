"""`python -m api.inference_server` as a subprocess: OpenAI-compatible, keyed, aborts on
disconnect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from backends.base import BackendRequest, FinalUsage
from backends.remote import RemoteBackend
from inference.outputs import GenerationDelta
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer
from tests.inference.server_process import API_KEY, ServerProcess


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[ServerProcess]:
    process = ServerProcess(tiny_model_dir, tmp_path_factory.mktemp("logs"), name="server")
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def wait_until_idle(server: ServerProcess, within_s: float) -> float:
    """Seconds until the engine runs nothing; fails after `within_s`."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        stats = server.stats()
        if stats["running"] == 0 and stats["waiting"] == 0:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"engine still busy after {within_s}s: {server.stats()}")


def test_serves_completions_chat_and_models_with_the_sdk(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    out = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0)
    assert out.usage is not None and 1 <= out.usage.completion_tokens <= 4
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert chat.choices[0].message.role == "assistant"
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=[5, 6, 7],
            max_tokens=3,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_requires_its_api_key(server: ServerProcess) -> None:
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="x", max_tokens=1)
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="not-served", prompt="x", max_tokens=1)


def test_client_disconnect_aborts_in_the_engine(server: ServerProcess) -> None:
    body = {
        "model": "tiny",
        "prompt": "A long story:",
        "max_tokens": 900,
        "stream": True,
        "ignore_eos": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{server.url}/v1/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert server.stats()["running"] == 1
    # The connection is closed: the engine must drop the request within a second.
    assert wait_until_idle(server, within_s=1.0) < 1.0
    assert server.stats()["kv_blocks_used"] == 0  # its KV blocks are free again


async def test_remote_backend_normalises_the_stream(
    server: ServerProcess, tiny_model_dir: Path
) -> None:
    """RemoteBackend against our server yields the engine's deltas, logprobs as token ids."""
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    prompt = tokenizer.encode("The river flows")
    backend = RemoteBackend(server.url, model="tiny", api_key=API_KEY)
    params = SamplingParams(max_tokens=4, temperature=0, logprobs=2, prompt_logprobs=2, n=2)
    request = BackendRequest(
        "req-remote-1",
        prompt,
        params,
        prompt_text=tokenizer.decode(prompt, skip_special_tokens=False),
    )
    try:
        assert await backend.check_health()
        events = [event async for event in backend.generate(request)]
    finally:
        await backend.close()
    *deltas, final = events
    assert isinstance(final, FinalUsage)
    assert final.prompt_tokens == len(prompt) and final.completion_tokens == 8
    by_index: dict[int, list[GenerationDelta]] = {0: [], 1: []}
    for delta in deltas:
        assert isinstance(delta, GenerationDelta)
        by_index[delta.index].append(delta)
    for index, items in by_index.items():
        token_ids = [t for d in items for t in d.token_ids]
        assert len(token_ids) == 4 and items[-1].completion_tokens == 4
        assert "".join(d.text for d in items) == tokenizer.decode(token_ids)
        assert items[-1].finish_reason == "length"
        assert all(len(e.top) >= 2 for d in items for e in d.logprobs or [])
        assert items[-1].cumulative_logprob < 0, index
    first = next(d for d in deltas if isinstance(d, GenerationDelta) and d.prompt_logprobs)
    assert first.prompt_logprobs is not None and len(first.prompt_logprobs) == len(prompt)
    assert first.prompt_logprobs[0] is None
