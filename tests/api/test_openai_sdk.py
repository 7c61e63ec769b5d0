"""The official `openai` SDK, unchanged but for base_url and key, against a live gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference.text.tokenizer import Tokenizer
from tests.api.openai_support import Gateway, live_gateway, local_model_config

PROMPT = "The river flows past the old mill"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Gateway]:
    with live_gateway(tmp_path_factory.mktemp("gw"), local_model_config(tiny_model_dir)) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)


def greedy(client: openai.OpenAI, prompt: str | list[int], max_tokens: int = 8) -> str:
    out = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    return out.choices[0].text


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


def test_completion_shape_and_usage(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
    assert out.id.startswith("cmpl-")
    assert out.object == "text_completion" and out.model == "tiny" and out.created > 0
    [choice] = out.choices
    assert choice.index == 0 and choice.finish_reason in ("stop", "length") and choice.text
    assert out.usage is not None
    assert out.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert 1 <= out.usage.completion_tokens <= 6
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_matches_non_stream_with_usage_chunk(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *deltas, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert all(c.usage is None for c in deltas)
    assert "".join(c.choices[0].text for c in deltas) == whole.choices[0].text
    assert deltas[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert len({c.id for c in chunks}) == 1


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, stream=True))
    assert chunks and all(c.choices and c.usage is None for c in chunks)


def test_n_and_prompt_lists_index_choices_across_prompts(client: openai.OpenAI) -> None:
    prompts = ["Hello there", "The mill"]
    out = client.completions.create(model="tiny", prompt=prompts, n=2, max_tokens=3, seed=1)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    alone = greedy(client, "The mill", 3)
    greedy_pair = client.completions.create(
        model="tiny", prompt=prompts, n=2, max_tokens=3, temperature=0
    )
    # Greedy: both choices of the second prompt equal that prompt completed alone.
    assert [c.text for c in greedy_pair.choices[2:]] == [alone, alone]
    assert out.usage is not None and out.usage.completion_tokens <= 12


def test_token_prompts_equal_string_prompts(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(PROMPT)
    expected = greedy(client, PROMPT)
    assert greedy(client, ids) == expected
    both = client.completions.create(
        model="tiny", prompt=[ids, tokenizer.encode("Hello")], max_tokens=8, temperature=0
    )
    assert both.choices[0].text == expected and both.choices[1].text == greedy(client, "Hello")


def test_stop_string_cuts_the_text(client: openai.OpenAI) -> None:
    text = greedy(client, PROMPT, 12)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    out = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop, "§never§"]
    )
    assert out.choices[0].text == text[: text.index(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> list[str]:
        out = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=10, temperature=1.0, n=2, seed=seed
        )
        return [c.text for c in out.choices]

    first = sample(1234)
    assert sample(1234) == first
    assert sample(999) != first


def test_logprobs_object(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2
    )
    choice = out.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None
    assert len(lp.tokens) == out.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob is not None and logprob <= 0
        assert 2 <= len(top) <= 3 and top[token] == logprob
        assert max(top.values()) == logprob  # greedy picks the most likely token


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    out = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1
    )
    choice = out.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    lp = choice.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert "".join(lp.tokens) == PROMPT and len(lp.tokens) == len(tokenizer.encode(PROMPT))
    assert lp.token_logprobs[0] is None and all(x is not None for x in lp.token_logprobs[1:])
    with_output = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=3, echo=True, temperature=0
    )
    assert with_output.choices[0].text == PROMPT + greedy(client, PROMPT, 3)


def test_best_of_returns_n_but_bills_every_candidate(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model="tiny",
        prompt=PROMPT,
        max_tokens=4,
        best_of=3,
        n=2,
        temperature=1.0,
        seed=5,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage is not None and out.usage.completion_tokens == 12


def test_chat_completion_and_logprobs(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    out = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=5, logprobs=True, top_logprobs=3
    )
    assert out.id.startswith("chatcmpl-") and out.object == "chat.completion"
    [choice] = out.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    content = choice.logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == out.usage.completion_tokens  # type: ignore[union-attr]
    for item in content:
        assert len(item.top_logprobs) == 3 and item.bytes is not None
        assert item.logprob <= 0
    newer = client.chat.completions.create(
        model="tiny", messages=messages, max_completion_tokens=2, temperature=0, n=2
    )
    assert [c.index for c in newer.choices] == [0, 1]
    assert newer.usage is not None and newer.usage.completion_tokens <= 4


def test_chat_stream_first_delta_carries_role(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Tell me about rivers"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *deltas, last = chunks
    assert deltas[0].object == "chat.completion.chunk"
    assert deltas[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in deltas[1:])
    assert last.choices == [] and last.usage is not None
    assert deltas[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in deltas)
    whole = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Tell me about rivers"}],
        max_tokens=6,
        temperature=0,
    )
    assert text == whole.choices[0].message.content


def test_models_lists_only_what_the_key_may_use(gateway: Gateway, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "sluicegate"
    scoped = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.scoped_key)
    assert list(scoped.models.list()) == []
    with pytest.raises(openai.NotFoundError):
        scoped.models.retrieve("tiny")


def test_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="tiny", prompt="x", max_tokens=1, extra_headers={"x-request-id": "my-req-123"}
    )
    assert raw.headers["x-request-id"] == "my-req-123"
    assert "openai-processing-ms" in raw.headers


async def test_async_client_completion_and_chat_streams(aclient: openai.AsyncOpenAI) -> None:
    async with aclient:
        out = await aclient.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=4, temperature=0
        )
        stream = await aclient.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream])
        assert text == out.choices[0].text
        chat = await aclient.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in chat]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 3


async def wait_until_idle(gateway: Gateway, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while gateway.engine_running():
        assert time.monotonic() < deadline, "the engine kept generating for a gone client"
        await asyncio.sleep(0.02)


async def test_client_disconnect_aborts_the_generation(gateway: Gateway) -> None:
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 900, "ignore_eos": True}
    headers = gateway.developer.headers
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/completions", json={**body, "stream": True}, headers=headers) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break
        assert gateway.engine_running() == 1
    await wait_until_idle(gateway, within_s=1.0)
    # Not streamed: the client gives up while the engine is still working.
    impatient = httpx.Timeout(30, read=0.5)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=impatient) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/completions", json=body, headers=headers)
        assert gateway.engine_running() == 1
    await wait_until_idle(gateway, within_s=1.0)


def test_streamed_prompt_list_interleaves_every_choice(client: openai.OpenAI) -> None:
    prompts = ["Hello there", "The mill"]
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt=prompts,
            n=2,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finished.add(choice.index)
    assert finished == {0, 1, 2, 3}
    assert texts[2] == texts[3] == greedy(client, "The mill", 4)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens <= 16
