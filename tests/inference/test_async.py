"""The online engine: streaming, concurrency, cancellation, abort, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.errors import BackendUnavailable
from inference.engine.async_engine import TorchAsyncEngine
from inference.outputs import GenerationDelta
from inference.params import SamplingParams


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[TorchAsyncEngine]:
    eng = TorchAsyncEngine.from_model(str(tiny_model_dir), num_kv_blocks=128, block_size=8)
    await eng.start()
    yield eng
    await eng.shutdown()


def greedy(max_tokens: int, **kwargs: object) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kwargs)  # type: ignore[arg-type]


async def collect(
    engine: TorchAsyncEngine, request_id: str, prompt: list[int], params: SamplingParams
) -> list[GenerationDelta]:
    return [d async for d in engine.generate(request_id, prompt, params)]


async def wait_idle(engine: TorchAsyncEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.running == 0 and stats.waiting == 0 and stats.kv_blocks_used == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine still busy: {engine.stats()}")


async def test_streams_deltas_until_finished(engine: TorchAsyncEngine) -> None:
    deltas = await collect(engine, "r", [5, 6, 7], greedy(10))
    assert [d.completion_tokens for d in deltas] == list(range(1, 11))
    assert [d.finish_reason for d in deltas] == [None] * 9 + ["length"]
    tokens = [t for d in deltas for t in d.token_ids]
    assert "".join(d.text for d in deltas) == engine.tokenizer.decode(tokens)
    assert deltas[0].prompt_tokens == 3
    await wait_idle(engine)


async def test_concurrent_requests_get_their_own_outputs(engine: TorchAsyncEngine) -> None:
    prompts = [[5 + i] * (3 + i) for i in range(4)]
    alone = [await collect(engine, f"solo{i}", p, greedy(8)) for i, p in enumerate(prompts)]
    together = await asyncio.gather(
        *(collect(engine, f"crowd{i}", p, greedy(8)) for i, p in enumerate(prompts))
    )
    for a, b in zip(alone, together, strict=True):
        assert [d.token_ids for d in a] == [d.token_ids for d in b]
        assert {d.request_id for d in b} == {b[0].request_id}


async def test_n_completions_interleave_in_one_stream(engine: TorchAsyncEngine) -> None:
    deltas = await collect(engine, "n", [5, 6], greedy(4, n=2))
    assert sorted(d.index for d in deltas) == [0] * 4 + [1] * 4
    assert sum(d.finish_reason is not None for d in deltas) == 2


async def test_closing_the_iterator_aborts_the_request(engine: TorchAsyncEngine) -> None:
    received = 0
    async with contextlib.aclosing(engine.generate("long", [5, 6], greedy(500))) as stream:
        async for _ in stream:
            received += 1
            if received == 2:
                break
    await wait_idle(engine)
    assert engine.stats().tokens_generated < 500


async def test_cancelling_the_consumer_aborts_the_request(engine: TorchAsyncEngine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate("cancelled", [5, 6], greedy(500)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(engine)


async def test_abort_ends_the_stream(engine: TorchAsyncEngine) -> None:
    stream = engine.generate("aborted", [5, 6], greedy(500))
    first = await anext(stream)
    await engine.abort("aborted")
    rest = [d async for d in stream]
    assert first.finish_reason is None and all(d.finish_reason is None for d in rest)
    await wait_idle(engine)


async def test_bad_requests_raise_before_anything_runs(engine: TorchAsyncEngine) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        await collect(engine, "big", [5, 6], greedy(engine.max_model_len))
    with pytest.raises(ValueError, match="prompt_token_ids"):
        await collect(engine, "empty", [], greedy(1))


async def test_shutdown_fails_pending_streams(tiny_model_dir: Path) -> None:
    eng = TorchAsyncEngine.from_model(str(tiny_model_dir), num_kv_blocks=64)
    with pytest.raises(BackendUnavailable):
        await collect(eng, "early", [5], greedy(1))  # not started
    await eng.start()
    stream = eng.generate("pending", [5, 6], greedy(900))
    await anext(stream)
    await eng.shutdown()
    with pytest.raises(BackendUnavailable):
        async for _ in stream:
            pass
    assert eng.stats().kv_blocks_used == 0


async def test_stats_show_work_in_progress(engine: TorchAsyncEngine) -> None:
    stream = engine.generate("busy", [5, 6, 7], greedy(300))
    await anext(stream)
    await anext(stream)
    stats = engine.stats()
    assert stats.running == 1 and stats.kv_blocks_used > 0 and stats.tokens_generated >= 1
    await stream.aclose()
    await wait_idle(engine)


async def test_a_step_that_fails_once_is_retried_and_nobody_notices(
    engine: TorchAsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the model runner raises once, as a torch kernel error would.
    runner = engine.engine.runner
    real_execute = runner.execute
    calls = 0

    def failing_once(output):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected kernel failure")
        return real_execute(output)

    monkeypatch.setattr(runner, "execute", failing_once)
    deltas = await collect(engine, "lucky", [5, 6, 7], greedy(4))
    assert [d.completion_tokens for d in deltas] == [1, 2, 3, 4]
    assert calls == 5  # the failed step, its retry, three more
    await wait_idle(engine)


def test_seeds_beyond_64_bits_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^seed"):
        SamplingParams(seed=2**70)
    assert SamplingParams(seed=2**63 - 1).seed == 2**63 - 1
