"""Token-exact agreement with transformers `generate` (fp32, greedy) under every engine path."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.models import native
from inference.models.native_llama import NativeLlama
from inference.params import SamplingParams
from tests.inference.hf_checkpoints import (
    build_model,
    random_prompts,
    reference_generate,
    save_checkpoint,
)

KINDS = ["gpt2", "llama", "qwen2"]
NEW_TOKENS = 12


@pytest.fixture(scope="session")
def checkpoints(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[PreTrainedModel, Path]]:
    root = tmp_path_factory.mktemp("hf")
    result = {}
    for kind in [*KINDS, "llama-tied"]:
        model = build_model(kind)
        result[kind] = (model, save_checkpoint(model, root / kind))
    sharded = build_model("llama", seed=0)
    result["llama-sharded"] = (sharded, save_checkpoint(sharded, root / "sharded", shard=True))
    return result


@cache
def _reference(kind: str, model: PreTrainedModel, prompt: tuple[int, ...], n: int) -> list[int]:
    return reference_generate(model, list(prompt), n)


def reference(
    kind: str, model: PreTrainedModel, prompt: list[int], n: int = NEW_TOKENS
) -> list[int]:
    return _reference(kind, model, tuple(prompt), n)


def greedy(max_tokens: int = NEW_TOKENS, **kwargs: object) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kwargs)  # type: ignore[arg-type]


def run_all(
    engine: LLMEngine, arrivals: dict[int, list[tuple[str, list[int], SamplingParams]]]
) -> dict[tuple[str, int], list[int]]:
    """Step the engine, adding requests at the given step numbers; tokens per (request, index)."""
    tokens: dict[tuple[str, int], list[int]] = {}
    step = 0
    while engine.has_unfinished() or any(s >= step for s in arrivals):
        for request_id, prompt, params in arrivals.pop(step, []):
            engine.add_request(request_id, prompt, params)
        for delta in engine.step():
            tokens.setdefault((delta.request_id, delta.index), []).extend(delta.token_ids)
        step += 1
    assert_no_leaks(engine)
    return tokens


def assert_no_leaks(engine: LLMEngine) -> None:
    bm = engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    assert all(bm.ref_count(b) == 0 for b in range(bm.num_blocks))
    assert not engine.scheduler.running and len(engine.scheduler.waiting) == 0


def make_engine(path: Path, **options: object) -> LLMEngine:
    defaults: dict[str, object] = {"block_size": 4, "num_kv_blocks": 256}
    return LLMEngine(path, EngineOptions(**{**defaults, **options}))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [*KINDS, "llama-tied", "llama-sharded"])
def test_single_request(checkpoints, kind: str) -> None:
    model, path = checkpoints[kind]
    prompt = random_prompts(1, 9, 9, seed=1)[0]
    got = run_all(make_engine(path), {0: [("r", prompt, greedy())]})
    assert got[("r", 0)] == reference(kind, model, prompt)


# Every engine path is proven: the C forward (Llama family), the torch model with the C
# decode-attention kernel, and pure torch.
PATHS = {
    "native-forward": {"forward": "native"},
    "native-attention": {"forward": "torch", "attention": "native"},
    "torch": {"forward": "torch", "attention": "torch"},
}


def engine_path(name: str, kind: str) -> dict[str, object]:
    if name != "torch" and native.load() is None:
        pytest.skip("no C compiler: the C kernels cannot be built")
    if name == "native-forward" and kind == "gpt2":
        pytest.skip("the C forward covers Llama-family models only")
    return PATHS[name]


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("kind", KINDS)
def test_staggered_batch_with_chunked_prefill(checkpoints, kind: str, path_name: str) -> None:
    """16 requests of different lengths join at different steps; prompts arrive in chunks."""
    model, path = checkpoints[kind]
    prompts = random_prompts(16, 3, 40, seed=2)
    arrivals: dict[int, list[tuple[str, list[int], SamplingParams]]] = {}
    for i, prompt in enumerate(prompts):
        arrivals.setdefault(i % 5 * 3, []).append((f"r{i}", prompt, greedy(NEW_TOKENS - i % 4)))
    engine = make_engine(
        path, max_num_batched_tokens=24, max_num_seqs=8, **engine_path(path_name, kind)
    )
    assert isinstance(engine.runner.model, NativeLlama) == (path_name == "native-forward")
    got = run_all(engine, arrivals)
    for i, prompt in enumerate(prompts):
        assert got[(f"r{i}", 0)] == reference(kind, model, prompt, NEW_TOKENS - i % 4), i


@pytest.mark.parametrize("path_name", ["native-forward", "torch"])
@pytest.mark.parametrize("kind", KINDS)
def test_prefix_cache_hits_do_not_change_outputs(checkpoints, kind: str, path_name: str) -> None:
    model, path = checkpoints[kind]
    shared = random_prompts(1, 21, 21, seed=3)[0]
    tails = random_prompts(6, 1, 7, seed=4)
    engine = make_engine(path, **engine_path(path_name, kind))
    arrivals = {0: [("first", shared + tails[0], greedy())]}
    arrivals[20] = [(f"r{i}", shared + tail, greedy()) for i, tail in enumerate(tails)]
    got = run_all(engine, arrivals)
    assert engine.block_manager.prefix_cache_hit_rate > 0
    assert got[("first", 0)] == reference(kind, model, shared + tails[0])
    for i, tail in enumerate(tails):
        assert got[(f"r{i}", 0)] == reference(kind, model, shared + tail)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("kind", KINDS)
def test_preemption_by_recompute(checkpoints, kind: str, path_name: str) -> None:
    """A pool far too small for the batch: sequences are preempted and recomputed."""
    model, path = checkpoints[kind]
    prompts = random_prompts(6, 10, 20, seed=5)
    engine = make_engine(path, num_kv_blocks=16, block_size=4, **engine_path(path_name, kind))
    got = run_all(engine, {0: [(f"r{i}", p, greedy()) for i, p in enumerate(prompts)]})
    assert engine.scheduler.num_preemptions > 0
    for i, prompt in enumerate(prompts):
        assert got[(f"r{i}", 0)] == reference(kind, model, prompt)


@pytest.mark.parametrize("kind", KINDS)
def test_long_prompt_in_small_chunks(checkpoints, kind: str) -> None:
    model, path = checkpoints[kind]
    prompt = random_prompts(1, 70, 70, seed=6)[0]
    engine = make_engine(path, max_num_batched_tokens=8)
    got = run_all(engine, {0: [("r", prompt, greedy())]})
    assert engine.num_steps >= 70 // 8 + NEW_TOKENS - 1
    assert got[("r", 0)] == reference(kind, model, prompt)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prompt_len", [8, 11])  # a multiple of block_size, and not
def test_n_completions_share_the_prompt(checkpoints, kind: str, prompt_len: int) -> None:
    model, path = checkpoints[kind]
    prompt = random_prompts(1, prompt_len, prompt_len, seed=7)[0]
    engine = make_engine(path)
    got = run_all(engine, {0: [("r", prompt, greedy(n=3))]})
    expected = reference(kind, model, prompt)
    assert [got[("r", i)] for i in range(3)] == [expected] * 3
    assert engine.prompt_tokens_processed < 2 * prompt_len  # siblings only redo the tail


@pytest.mark.parametrize("path_name", ["native-forward", "torch"])
def test_logprobs_match_transformers(checkpoints, path_name: str) -> None:
    model, path = checkpoints["llama"]
    prompt = random_prompts(1, 10, 10, seed=8)[0]
    engine = make_engine(path, **engine_path(path_name, "llama"))
    engine.add_request("r", prompt, greedy(6, logprobs=3, prompt_logprobs=2))
    deltas = []
    while engine.has_unfinished():
        deltas.extend(engine.step())
    tokens = [t for d in deltas for t in d.token_ids]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0]
    expected = torch.log_softmax(logits, dim=-1)
    for i, delta in enumerate(deltas):
        assert delta.logprobs is not None
        (lp,) = delta.logprobs
        row = expected[len(prompt) - 1 + i]
        assert lp.logprob == pytest.approx(row[lp.token_id].item(), abs=1e-4)
        assert list(lp.top) == row.topk(3).indices.tolist()
        for token, value in lp.top.items():
            assert value == pytest.approx(row[token].item(), abs=1e-4)
    prompt_lps = deltas[0].prompt_logprobs
    assert prompt_lps is not None and len(prompt_lps) == len(prompt) and prompt_lps[0] is None
    for position in range(1, len(prompt)):
        entry = prompt_lps[position]
        assert entry is not None and entry.token_id == prompt[position]
        assert entry.logprob == pytest.approx(
            expected[position - 1, prompt[position]].item(), abs=1e-4
        )
        assert len(entry.top) == 2
