"""The vLLM adapter against a fake `vllm` package, only for what real vLLM cannot show here.

Everything vLLM's CPU build can do is tested against it in `tests/vllm/` (`make test-vllm`):
deltas, `n`, finish reasons, logprobs, aborts, stats, errors. The fake stays for engine
arguments this machine cannot run (TP=4, PP=2, DP=2 over Ray: they are passed through
unchanged, and per-engine stats are summed over data-parallel engines), for calls our
server never makes (`abort()` from outside, `priority`), and for an older vLLM's prompt type.
"""

from __future__ import annotations

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


async def test_missing_vllm_is_a_clear_error(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    adapter = VllmAsyncEngine(str(tiny_model_dir))
    assert adapter.max_model_len == 1024  # from config.json until vLLM says otherwise
    with pytest.raises(VllmUnavailableError, match="make vllm"):
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


def test_options_not_named_here_go_to_vllm_as_they_are() -> None:
    options = VllmEngineOptions.of(
        {"tensor_parallel_size": 2, "enforce_eager": True, "extra_engine_args": {"seed": 1}}
    )
    assert options.tensor_parallel_size == 2
    assert options.extra_engine_args == {"seed": 1, "enforce_eager": True}
    assert options.engine_args("m", "m")["enforce_eager"] is True
