"""Same answers as our engine: vLLM behind our inference server against our torch engine.

One checkpoint (the tiny Llama, float32), the same prompts as token ids: greedy token ids
are equal, except that a near-tie (two tokens whose log-probabilities differ by less than
float rounding between two implementations can settle) may go either way; after it the two
continuations differ legitimately, so the comparison stops there. Prompt token counts and
what vLLM's own counters saw are equal to what the server reports as usage.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.llm import LLM
from inference.outputs import CompletionOutput
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer
from tests.vllm.conftest import MODEL, Upstream

# The first test of a session also waits for a vLLM server to start: minutes on a busy machine.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

NEW_TOKENS = 24
NEAR_TIE = 1e-3  # nats; float32 logits of two implementations agree far closer than this


@pytest.fixture(scope="module")
def torch_llm(tiny_llama_dir: Path) -> Iterator[LLM]:
    yield LLM(str(tiny_llama_dir))


def tokenizer_of(llm: LLM) -> Tokenizer:
    assert llm.tokenizer is not None, "the tiny checkpoints have tokenizers"
    return llm.tokenizer


def prompts(llm: LLM) -> list[list[int]]:
    rng = random.Random(14)
    vocab = tokenizer_of(llm).vocab_size
    texts = ["Once upon a time", "The river flows past the old mill", "1, 2, 3,"]
    chat = tokenizer_of(llm).apply_chat_template([{"role": "user", "content": "Say hello"}])
    encoded = [tokenizer_of(llm).encode(t) for t in [*texts, chat]]
    random_ids = [[rng.randrange(4, vocab) for _ in range(n)] for n in (1, 7, 60, 300)]
    return encoded + random_ids


def vllm_greedy(
    upstream: Upstream, prompt: list[int], logprobs: int = 2, max_tokens: int = NEW_TOKENS
) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "logprobs": logprobs,
        "return_tokens_as_token_ids": True,
    }
    response = upstream.post("/v1/completions", body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def token_ids(choice: dict[str, Any]) -> list[int]:
    return [int(token.removeprefix("token_id:")) for token in choice["logprobs"]["tokens"]]


def agreeing_prefix(ours: CompletionOutput, theirs: list[int]) -> tuple[int, str]:
    """How many tokens agree before a forgiven near-tie (or all); raises on a real mismatch."""
    assert ours.logprobs is not None
    for position, (mine, other) in enumerate(zip(ours.token_ids, theirs, strict=True)):
        if mine == other:
            continue
        top = ours.logprobs[position].top
        gap = top[mine] - top.get(other, float("-inf"))
        assert gap < NEAR_TIE, (
            f"position {position}: ours {mine}, vLLM {other}, a gap of {gap:.5f} nats"
        )
        return position, f"near-tie at {position} ({gap:.2e} nats)"
    return len(theirs), "all equal"


def test_greedy_tokens_equal_our_engine(upstream: Upstream, torch_llm: LLM) -> None:
    batch = prompts(torch_llm)
    ours = torch_llm.generate(
        batch, SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=2)
    )
    equal_tokens, verdicts = 0, []
    for prompt, mine in zip(batch, ours, strict=True):
        data = vllm_greedy(upstream, prompt)
        theirs = token_ids(data["choices"][0])
        agreed, verdict = agreeing_prefix(mine.outputs[0], theirs)
        equal_tokens += agreed
        verdicts.append(verdict)
        assert data["usage"]["prompt_tokens"] == len(prompt) == len(mine.prompt_token_ids)
        assert data["usage"]["completion_tokens"] == NEW_TOKENS
    # Near-ties are rare: most of what was compared must have been compared in full.
    assert equal_tokens >= 0.75 * NEW_TOKENS * len(batch), verdicts


def test_logprobs_equal_our_engine(upstream: Upstream, torch_llm: LLM) -> None:
    prompt = tokenizer_of(torch_llm).encode("The river flows past the old mill")
    mine = torch_llm.generate(
        [prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=3)
    )[0].outputs[0]
    data = vllm_greedy(upstream, prompt, logprobs=3, max_tokens=8)
    choice = data["choices"][0]
    assert mine.logprobs is not None
    agreed, _ = agreeing_prefix(mine, token_ids(choice))
    for position in range(min(agreed, 8)):
        expected = mine.logprobs[position]
        assert choice["logprobs"]["token_logprobs"][position] == pytest.approx(
            expected.logprob, abs=1e-3
        )
        top = {int(t.removeprefix("token_id:")): v for t, v in
               choice["logprobs"]["top_logprobs"][position].items()}  # fmt: skip
        assert set(top) == set(expected.top), position
        for token, logprob in expected.top.items():
            assert top[token] == pytest.approx(logprob, abs=1e-3)


def test_usage_is_what_vllm_counted(upstream: Upstream, torch_llm: LLM) -> None:
    """The server's usage against vLLM's own stat loggers (prompt and generated tokens)."""
    prompt = tokenizer_of(torch_llm).encode("Counting tokens, once more")
    before = upstream.stats()
    response = upstream.post(
        "/v1/completions",
        {"model": MODEL, "prompt": prompt, "max_tokens": 9, "n": 2, "temperature": 0.8},
    )
    assert response.status_code == 200, response.text
    after = upstream.stats()
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == len(prompt)
    assert usage["completion_tokens"] == after["tokens_generated"] - before["tokens_generated"]
    # vLLM counts the prompt once per sequence it prefills (n=2: twice, the second cached).
    processed = after["prompt_tokens_processed"] - before["prompt_tokens_processed"]
    assert processed in (len(prompt), 2 * len(prompt))
    assert after["running"] == 0 and after["waiting"] == 0
