"""A sequence that makes an engine step fail fails alone; the rest of its batch carries on.

Fault injection: the model runner raises whenever one marked request is in the batch, as a
torch kernel would on a value it cannot handle. Nothing else is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from core.errors import GenerationFailed
from inference import LLM
from inference.engine.async_engine import TorchAsyncEngine
from inference.engine.llm_engine import LLMEngine
from inference.engine.scheduler import SchedulerOutput
from inference.outputs import GenerationDelta
from inference.params import SamplingParams

POISON = [7, 8, 9, 10, 11]  # the prompt of the request that breaks the kernel


def poison_runner(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every step that holds the POISON prompt raise; returns the batch sizes tried."""
    runner = engine.runner
    real_execute: Callable[[SchedulerOutput], object] = runner.execute
    batches: list[int] = []

    def execute(output: SchedulerOutput) -> object:
        batches.append(len(output.scheduled))
        if any(item.seq.group.prompt_token_ids == POISON for item in output.scheduled):
            raise RuntimeError("injected: this sequence breaks the kernel")
        return real_execute(output)

    monkeypatch.setattr(runner, "execute", execute)
    return batches


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[TorchAsyncEngine]:
    eng = TorchAsyncEngine.from_model(str(tiny_model_dir), num_kv_blocks=256, block_size=8)
    await eng.start()
    yield eng
    await eng.shutdown()


async def _tokens(stream: AsyncIterator[GenerationDelta]) -> list[int]:
    return [t async for d in stream for t in d.token_ids]


async def test_only_the_sequence_that_breaks_the_step_fails(
    engine: TorchAsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [[5 + i] * (3 + i) for i in range(6)]
    alone = [
        await _tokens(engine.generate(f"solo{i}", p, greedy(24))) for i, p in enumerate(prompts)
    ]
    batches = poison_runner(engine.engine, monkeypatch)

    streams = [engine.generate(f"crowd{i}", p, greedy(24)) for i, p in enumerate(prompts)]
    firsts = [await anext(s) for s in streams]  # all of them are running now
    poisoned = asyncio.ensure_future(_tokens(engine.generate("poison", POISON, greedy(24))))
    rests = await asyncio.gather(*(_tokens(s) for s in streams))

    with pytest.raises(GenerationFailed):
        await poisoned
    for solo, first, rest in zip(alone, firsts, rests, strict=True):
        assert first.token_ids + rest == solo  # same tokens as alone: nothing lost or repeated
    assert max(batches) > 1  # the poison really shared a batch with the others
    assert engine.running
    # The engine keeps serving, and the poison's blocks were freed.
    assert await _tokens(engine.generate("after", [5, 6], greedy(4))) != []
    assert engine.engine.block_manager.num_used_blocks == 0


async def test_a_step_that_fails_for_everyone_fails_everyone_and_keeps_serving(
    engine: TorchAsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = engine.engine.runner
    real_execute = runner.execute
    broken = True

    def execute(output: SchedulerOutput) -> object:
        if broken:
            raise RuntimeError("injected: the kernel is broken for every sequence")
        return real_execute(output)

    monkeypatch.setattr(runner, "execute", execute)
    results = await asyncio.gather(
        *(_tokens(engine.generate(f"r{i}", [5, 6, i], greedy(4))) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, GenerationFailed) for r in results)
    broken = False
    assert len(await _tokens(engine.generate("after", [5, 6], greedy(4)))) == 4


def test_offline_generation_reports_the_failed_request(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = LLM(str(tiny_model_dir), num_kv_blocks=256, block_size=8)
    poison_runner(llm.engine, monkeypatch)
    with pytest.raises(GenerationFailed):
        llm.generate([POISON, [5, 6]], greedy(4))
    assert llm.engine.block_manager.num_used_blocks == 0
