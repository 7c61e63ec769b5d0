"""Tensor parallelism on this CPU: two vLLM workers (multiprocessing executor, gloo), one core
each, against the one-worker server; then the engine dies under it and the server says so.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.llm import LLM
from tests.vllm.conftest import MODEL, Upstream, start_upstream
from tests.vllm.test_agreement import NEAR_TIE, NEW_TOKENS, prompts, token_ids, vllm_greedy

# The first test of a session also waits for a vLLM server to start: minutes on a busy machine.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def tp2(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    logs = tmp_path_factory.mktemp("vllm-tp2-logs")
    server = start_upstream(tiny_llama_dir, logs, name="tp2", tensor_parallel_size=2)
    upstream = Upstream(server)
    try:
        yield upstream
    finally:
        upstream.close()
        server.stop()


def test_two_workers_are_really_sharding(tp2: Upstream) -> None:
    log = tp2.server.log_tail(200_000)
    assert "world_size=2" in log
    assert "Worker_TP0" in log and "Worker_TP1" in log


def test_tp2_greedy_tokens_equal_tp1(
    tp2: Upstream, upstream: Upstream, tiny_llama_dir: Path
) -> None:
    compared, batch = 0, prompts(LLM(str(tiny_llama_dir)))
    for prompt in batch:
        one, two = vllm_greedy(upstream, prompt), vllm_greedy(tp2, prompt)
        reference, sharded = token_ids(one["choices"][0]), token_ids(two["choices"][0])
        counts = ("prompt_tokens", "completion_tokens")  # cached_tokens: TP=1 saw them before
        assert [two["usage"][c] for c in counts] == [one["usage"][c] for c in counts]
        for position, (a, b) in enumerate(zip(reference, sharded, strict=True)):
            if a != b:  # a near-tie only: the all-reduce sums in another order
                top = one["choices"][0]["logprobs"]["top_logprobs"][position]
                gap = top[f"token_id:{a}"] - top.get(f"token_id:{b}", float("-inf"))
                assert gap < NEAR_TIE, f"position {position}: {a} vs {b}, gap {gap:.5f}"
                break
            compared += 1
    assert compared >= 0.75 * NEW_TOKENS * len(batch)


def engine_core_pid(server_pid: int) -> int:
    """vLLM's engine-core process among the server's children (it names itself)."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for child in map(int, children):
        if b"EngineCore" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError(f"no EngineCore among {children}")


def test_a_dead_engine_is_a_503_in_our_shape(tp2: Upstream) -> None:
    assert tp2.server.process is not None
    os.kill(engine_core_pid(tp2.server.process.pid), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (health := tp2.health()) == 200:
        assert time.monotonic() < deadline, "vLLM's death went unnoticed for 60 s"
        time.sleep(0.1)
    assert health == 503
    response = tp2.post("/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "backend_unavailable", error
