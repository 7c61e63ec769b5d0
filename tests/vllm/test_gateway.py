"""The whole product on real vLLM: gateway -> `api.inference_server --engine vllm` -> vLLM.

Each request's usage is checked three ways: against vLLM's own stat loggers (the server's
/stats: tokens it generated and prompt tokens it prefilled), against our torch engine on
the same checkpoint where the answer is deterministic, and against the gateway's ledger row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from inference.llm import LLM
from inference.params import SamplingParams
from tests.vllm.conftest import MODEL, Product, Upstream
from tests.vllm.test_agreement import tokenizer_of

# The first test of a session also waits for a vLLM server to start: minutes on a busy machine.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

PROMPT = "The river flows past the old mill"


@pytest.fixture(scope="module")
def torch_llm(tiny_llama_dir: Path) -> Iterator[LLM]:
    yield LLM(str(tiny_llama_dir))


class Call:
    """One request through the gateway, with vLLM's counters before and after it."""

    def __init__(self, product: Product, upstream: Upstream) -> None:
        self.product, self.gateway, self.upstream = product, product.gateway, upstream
        self.client_id = f"vllm-test-{uuid.uuid4().hex[:12]}"
        self.before = upstream.stats()
        self.after: dict[str, Any] = {}

    @property
    def headers(self) -> dict[str, str]:
        return {**self.gateway.developer.headers, "x-request-id": self.client_id}

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = httpx.post(
            f"{self.gateway.url}{path}", json=body, headers=self.headers, timeout=300
        )
        self.after = self.upstream.stats()
        return response

    def stream(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = []
        with httpx.stream(
            "POST", f"{self.gateway.url}{path}", json=body, headers=self.headers, timeout=300
        ) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line.removeprefix("data: ")))
        self.after = self.upstream.stats()
        return chunks

    def vllm_generated(self) -> int:
        return int(self.after["tokens_generated"] - self.before["tokens_generated"])

    def vllm_prefilled(self) -> int:
        return int(self.after["prompt_tokens_processed"] - self.before["prompt_tokens_processed"])

    def ledger(self) -> dict[str, Any]:
        return self.product.ledger_row(self.client_id)


def assert_metered(call: Call, usage: dict[str, int], *, status: str = "ok") -> None:
    assert usage["completion_tokens"] == call.vllm_generated()
    row = call.ledger()
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        status,
    )


def test_completion_through_the_product(
    product: Product, upstream: Upstream, torch_llm: LLM
) -> None:
    call = Call(product, upstream)
    response = call.post(
        "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    )
    assert response.status_code == 200, response.text
    data = response.json()
    usage = data["usage"]
    expected = torch_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=12))[0]
    assert usage["prompt_tokens"] == len(expected.prompt_token_ids) == call.vllm_prefilled()
    assert data["choices"][0]["text"] == expected.outputs[0].text
    assert data["choices"][0]["finish_reason"] == "length" and usage["completion_tokens"] == 12
    assert_metered(call, usage)


def test_chat_streaming_with_usage(product: Product, upstream: Upstream, torch_llm: LLM) -> None:
    messages = [{"role": "user", "content": "Tell me about the mill"}]
    call = Call(product, upstream)
    chunks = call.stream(
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": messages,
            "max_tokens": 10,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    *deltas, last = chunks
    assert last["choices"] == [] and last["usage"] is not None
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in deltas)
    assert [c["choices"][0]["finish_reason"] for c in deltas][-1] == "length"
    rendered = tokenizer_of(torch_llm).apply_chat_template(messages)
    expected = torch_llm.generate(rendered, SamplingParams(temperature=0, max_tokens=10))[0]
    assert text == expected.outputs[0].text
    assert last["usage"]["prompt_tokens"] == len(expected.prompt_token_ids) == call.vllm_prefilled()
    assert_metered(call, last["usage"])


def test_eos_ends_the_completion_as_our_engine_does(
    product: Product, upstream: Upstream, torch_llm: LLM
) -> None:
    """The model's EOS, pushed to the top by a logit bias: a stop, counted as one token."""
    eos = tokenizer_of(torch_llm).eos_token_id
    assert eos is not None
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8, "logit_bias": {str(eos): 100}}
    call = Call(product, upstream)
    response = call.post("/v1/completions", body)
    assert response.status_code == 200, response.text
    choice, usage = response.json()["choices"][0], response.json()["usage"]
    params = SamplingParams(max_tokens=8, logit_bias={eos: 100.0})
    expected = torch_llm.generate(PROMPT, params)[0].outputs[0]
    assert (
        (choice["finish_reason"], choice["text"])
        == ("stop", "")
        == (
            expected.finish_reason,
            expected.text,
        )
    )
    assert usage["completion_tokens"] == len(expected.token_ids)
    assert_metered(call, usage)


def test_stop_string(product: Product, upstream: Upstream, torch_llm: LLM) -> None:
    full = torch_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=16))[0]
    text = full.outputs[0].text
    stop = text[len(text) // 2 :][:3]
    expected = torch_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=16, stop=[stop]))
    call = Call(product, upstream)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "stop": [stop]}
    response = call.post("/v1/completions", body)
    assert response.status_code == 200, response.text
    choice, usage = response.json()["choices"][0], response.json()["usage"]
    assert choice["finish_reason"] == "stop" and stop not in choice["text"]
    assert choice["text"] == expected[0].outputs[0].text
    assert usage["completion_tokens"] == len(expected[0].outputs[0].token_ids)
    assert_metered(call, usage)


def test_n_with_seed_is_reproducible(product: Product, upstream: Upstream) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "n": 3, "temperature": 1.0}
    calls, texts = [], []
    for seed in (7, 7, 8):
        call = Call(product, upstream)
        response = call.post("/v1/completions", {**body, "seed": seed})
        assert response.status_code == 200, response.text
        data = response.json()
        assert sorted(c["index"] for c in data["choices"]) == [0, 1, 2]
        assert data["usage"]["completion_tokens"] == 18
        assert_metered(call, data["usage"])
        calls.append(call)
        texts.append([c["text"] for c in sorted(data["choices"], key=lambda c: c["index"])])
    assert texts[0] == texts[1]  # the same seed: the same three samples
    assert texts[0] != texts[2]


def test_streaming_completion_with_logprobs_over_the_sdk(
    product: Product, upstream: Upstream, torch_llm: LLM
) -> None:
    call = Call(product, upstream)
    gateway = product.gateway
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)
    stream = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=6,
        temperature=0,
        logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": call.client_id},
    )
    chunks = list(stream)
    call.after = upstream.stats()
    usage = chunks[-1].usage
    assert usage is not None
    logprobs = [c.choices[0].logprobs for c in chunks if c.choices]
    tokens = [t for lp in logprobs if lp is not None for t in lp.tokens or []]
    tops = [t for lp in logprobs if lp is not None for t in lp.top_logprobs or []]
    assert len(tokens) == len(tops) == usage.completion_tokens == 6
    assert all(len(top) == 2 for top in tops)
    expected = torch_llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=6))[0]
    assert "".join(tokens) == expected.outputs[0].text
    assert_metered(call, usage.model_dump())


def test_vllm_refusal_is_a_400_in_our_shape(product: Product, upstream: Upstream) -> None:
    """vLLM refuses more logprobs than its `max_logprobs` (3 here); ours would allow 5."""
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "logprobs": 4}
    direct = upstream.post("/v1/completions", body)
    call = Call(product, upstream)
    through = call.post("/v1/completions", body)
    for response in (direct, through):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "logprobs"
        assert "max allowed: 3" in error["message"]
    assert call.vllm_generated() == 0
    assert call.ledger()["status"] == "error"
