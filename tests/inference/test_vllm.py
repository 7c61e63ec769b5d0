"""The vLLM adapter against a fake `vllm` package with vLLM 0.33's module paths and names."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.outputs import GenerationDelta
from inference.params import SamplingParams
from inference.vllm_engine import VllmAsyncEngine, VllmEngineOptions, VllmUnavailableError

FAKES = Path(__file__).resolve().parents[1] / "fakes"
PROMPT = [5, 17, 42, 9]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Make `import vllm` find the fake for this test only."""
    monkeypatch.syspath_prepend(str(FAKES))
    import vllm.v1.engine.async_llm as fake

    yield fake
    for name in [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture
async def engine(fake_vllm: Any, tiny_model_dir: Path) -> AsyncIterator[VllmAsyncEngine]:
    adapter = VllmAsyncEngine(str(tiny_model_dir), served_model_name="tiny")
    await adapter.start()
    yield adapter
    await adapter.shutdown()


def expected_tokens(fake: Any, index: int, count: int) -> list[int]:
    return [fake.fake_token(PROMPT, index, step) for step in range(count)]


async def collect(
    engine: VllmAsyncEngine, params: SamplingParams, request_id: str = "req-1"
) -> list[GenerationDelta]:
    return [delta async for delta in engine.generate(request_id, PROMPT, params)]


async def test_engine_args_pass_through(fake_vllm: Any, tiny_model_dir: Path) -> None:
    options = VllmEngineOptions(
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        data_parallel_size=2,
        distributed_executor_backend="ray",
        enable_prefix_caching=False,
        max_num_seqs=64,
        max_model_len=512,
        gpu_memory_utilization=0.8,
        extra_engine_args={"scheduling_policy": "priority", "dtype": "bfloat16"},
    )
    adapter = VllmAsyncEngine(str(tiny_model_dir), options, served_model_name="m")
    await adapter.start()
    args = adapter.engine.engine_args
    assert type(args).__name__ == "AsyncEngineArgs"
    assert (args.model, args.served_model_name) == (str(tiny_model_dir), "m")
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (4, 2)
    assert (args.data_parallel_size, args.distributed_executor_backend) == (2, "ray")
    assert (args.enable_prefix_caching, args.max_num_seqs) == (False, 64)
    assert (args.max_model_len, args.gpu_memory_utilization) == (512, 0.8)
    assert (args.scheduling_policy, args.dtype) == ("priority", "bfloat16")
    assert adapter.max_model_len == 512 and adapter.model_name == "m"
    assert adapter.stats().kv_blocks_free == 2 * 512  # two data-parallel engines
    await adapter.shutdown()


async def test_sampling_params_mapping(engine: VllmAsyncEngine, fake_vllm: Any) -> None:
    params = SamplingParams(
        n=2,
        max_tokens=3,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        seed=123,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={7: 2.0},
        stop=["\n\n"],
        stop_token_ids=[99999],
        ignore_eos=True,
        logprobs=2,
        prompt_logprobs=1,
    )
    await collect(engine, params)
    prompt, mapped = engine.engine.requests["req-1"]
    assert prompt == {"type": "token", "prompt_token_ids": PROMPT}  # vllm.inputs.tokens_input
    assert engine.engine.raw_prompts == 0
    assert type(mapped).__module__ == "vllm.sampling_params"
    assert mapped.output_kind == fake_vllm.RequestOutputKind.DELTA
    expected = {
        "n": 2,
        "max_tokens": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 123,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {7: 2.0},
        "stop": ["\n\n"],
        "stop_token_ids": [99999],
        "ignore_eos": True,
        "logprobs": 2,
        "prompt_logprobs": 1,
    }
    assert {name: getattr(mapped, name) for name in expected} == expected
    await collect(engine, SamplingParams(), "req-2")
    _, defaults = engine.engine.requests["req-2"]
    assert (defaults.stop, defaults.stop_token_ids, defaults.logit_bias) == (None, None, None)


async def test_deltas_for_one_completion(engine: VllmAsyncEngine, fake_vllm: Any) -> None:
    deltas = await collect(engine, SamplingParams(max_tokens=5, temperature=0))
    tokens = expected_tokens(fake_vllm, 0, 5)
    assert [d.token_ids for d in deltas] == [[t] for t in tokens]
    assert "".join(d.text for d in deltas) == "".join(fake_vllm.fake_text(t) for t in tokens)
    assert [d.completion_tokens for d in deltas] == [1, 2, 3, 4, 5]
    assert [d.finish_reason for d in deltas] == [None, None, None, None, "length"]
    assert {(d.request_id, d.index, d.prompt_tokens) for d in deltas} == {("req-1", 0, 4)}
    assert all(d.logprobs is None and d.prompt_logprobs is None for d in deltas)


async def test_n_completions_interleave_and_each_finish_once(
    engine: VllmAsyncEngine, fake_vllm: Any
) -> None:
    deltas = await collect(engine, SamplingParams(n=3, max_tokens=4))
    for index in range(3):
        own = [d for d in deltas if d.index == index]
        assert [t for d in own for t in d.token_ids] == expected_tokens(fake_vllm, index, 4)
        assert [d.finish_reason for d in own].count("length") == 1
        assert own[-1].finish_reason == "length"
    assert [d.index for d in deltas[:3]] == [0, 1, 2]  # interleaved, not one after another


async def test_finish_reasons(engine: VllmAsyncEngine, fake_vllm: Any) -> None:
    tokens = expected_tokens(fake_vllm, 0, 6)
    stop_text = fake_vllm.fake_text(tokens[2])
    deltas = await collect(engine, SamplingParams(max_tokens=6, stop=[stop_text]), "s")
    assert deltas[-1].finish_reason == "stop"
    text = "".join(d.text for d in deltas)
    assert text == "".join(fake_vllm.fake_text(t) for t in tokens[:2])
    assert stop_text not in text
    deltas = await collect(engine, SamplingParams(max_tokens=6, stop_token_ids=[tokens[3]]), "t")
    assert [t for d in deltas for t in d.token_ids] == tokens[:4]
    assert deltas[-1].finish_reason == "stop"


async def test_logprobs_mapping(engine: VllmAsyncEngine, fake_vllm: Any) -> None:
    deltas = await collect(engine, SamplingParams(max_tokens=2, logprobs=1, prompt_logprobs=0))
    first = deltas[0].logprobs
    assert first is not None
    token = deltas[0].token_ids[0]
    # The fake ranks the chosen token second: top-1 is the alternative alone.
    assert (first[0].token_id, first[0].logprob, first[0].top) == (token, -1.01, {token + 1: -0.5})
    assert deltas[0].prompt_logprobs is not None and deltas[0].prompt_logprobs[0] is None
    assert [p.token_id for p in deltas[0].prompt_logprobs[1:] if p] == PROMPT[1:]
    assert deltas[1].prompt_logprobs is None
    assert deltas[1].cumulative_logprob == pytest.approx(-1.01 - 1.02)
    deltas = await collect(engine, SamplingParams(max_tokens=1, logprobs=3), "top3")
    top = deltas[0].logprobs[0].top  # type: ignore[index]
    assert list(top.values()) == sorted(top.values(), reverse=True) and len(top) == 3
    assert token not in top or top[token] == -1.01


async def test_closing_the_stream_aborts(engine: VllmAsyncEngine) -> None:
    stream = engine.generate("gone", PROMPT, SamplingParams(max_tokens=50))
    assert (await anext(stream)).completion_tokens == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert "gone" in engine.engine.aborted


async def test_cancelling_the_consumer_aborts(engine: VllmAsyncEngine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate("cancelled", PROMPT, SamplingParams(max_tokens=10_000)):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "cancelled" in engine.engine.aborted
    assert not engine.engine._active  # the fake engine dropped the request


async def test_abort_from_outside_ends_the_stream(engine: VllmAsyncEngine) -> None:
    stream = engine.generate("other", PROMPT, SamplingParams(max_tokens=10_000))
    await anext(stream)
    await engine.abort("other")
    rest = [delta async for delta in stream]
    assert all(d.finish_reason is None for d in rest) and len(rest) <= 1
    assert engine.engine.aborted.count("other") == 1  # finished streams are not aborted again


async def test_priority_needs_priority_scheduling(
    fake_vllm: Any, tiny_model_dir: Path, engine: VllmAsyncEngine
) -> None:
    with pytest.raises(ValueError, match="Priority scheduling is not enabled"):
        await collect_with_priority(engine)
    options = VllmEngineOptions(extra_engine_args={"scheduling_policy": "priority"})
    prioritised = VllmAsyncEngine(str(tiny_model_dir), options)
    await prioritised.start()
    assert len(await collect_with_priority(prioritised)) == 2


async def collect_with_priority(engine: VllmAsyncEngine) -> list[GenerationDelta]:
    params = SamplingParams(max_tokens=2)
    return [d async for d in engine.generate("p", PROMPT, params, tenant="acme", priority=-1)]


async def test_stats_from_vllm_loggers(engine: VllmAsyncEngine) -> None:
    await collect(engine, SamplingParams(n=2, max_tokens=3))
    stats = engine.stats()
    assert stats.tokens_generated == 6
    assert stats.prompt_tokens_processed == len(PROMPT)
    assert stats.prefix_cache_hit_rate == pytest.approx(16 / len(PROMPT))
    assert stats.kv_blocks_used + stats.kv_blocks_free == 512
    assert stats.waiting == 0


async def test_shutdown_and_use_before_start(engine: VllmAsyncEngine, tiny_model_dir: Path) -> None:
    underlying = engine.engine
    await engine.shutdown()
    assert underlying.shut_down
    with pytest.raises(VllmUnavailableError, match="not started"):
        engine.engine  # noqa: B018
    assert engine.tokenizer.decode(engine.tokenizer.encode("hé 🌊")) == "hé 🌊"


async def test_missing_vllm_is_a_clear_error(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    adapter = VllmAsyncEngine(str(tiny_model_dir))
    assert adapter.max_model_len == 1024  # from config.json until vLLM says otherwise
    with pytest.raises(VllmUnavailableError, match=r"pip install 'sluicegate\[vllm\]'"):
        await adapter.start()


async def test_falls_back_to_tokens_prompt_on_older_vllm(
    fake_vllm: Any, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vllm.inputs

    monkeypatch.delattr(vllm.inputs, "tokens_input")
    adapter = VllmAsyncEngine(str(tiny_model_dir))
    await adapter.start()
    await collect(adapter, SamplingParams(max_tokens=1))
    prompt, _ = adapter.engine.requests["req-1"]
    assert prompt == {"prompt_token_ids": PROMPT} and adapter.engine.raw_prompts == 1
