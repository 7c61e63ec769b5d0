"""A client that hangs up aborts the request inside vLLM, shown by vLLM's own counters.

The client reads a few tokens of a long greedy stream and closes the connection. From that
moment the server's /stats (vLLM's stat loggers, updated every engine step) is polled: the
running request count must drop to zero and the generated-token count must stop. vLLM drops
an aborted request before its next step; what it generates after the close is the steps that
run while the close travels (client -> gateway -> server -> engine core), one token each for
a single request. How many that is depends on the step time: none under load (steps of
~100 ms), 25-130 on a quiet machine where the tiny model steps every ~4 ms. So the bounds are
in time (the request stops within `STOP_WITHIN_S` of the close, and nothing runs after) and
far below `MAX_TOKENS` (a request nobody aborted runs on to its end).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.vllm.conftest import MODEL, Product, Upstream

# The first test of a session also waits for a vLLM server to start: minutes on a busy machine.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

MAX_TOKENS = 1000
READ_TOKENS = 5
STOP_WITHIN_S = 2.0  # from the close until vLLM runs the request no more


@dataclass
class Hangup:
    received: int  # completion tokens the client saw before closing
    generated: int  # tokens vLLM generated for the request, from its own counter
    stopped_after_s: float  # from the close until vLLM reported no running request
    still_after_s: int  # tokens generated in the second after it stopped (must be 0)


def hang_up(url: str, headers: dict[str, str], upstream: Upstream) -> Hangup:
    before = upstream.stats()["tokens_generated"]
    body = {
        "model": MODEL,
        "prompt": "A story that never ends:",
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    received = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"]:
                received += 1
            if received == READ_TOKENS:
                break
    closed = time.monotonic()  # leaving the block closed the connection
    while (stats := upstream.stats())["running"] > 0:
        assert time.monotonic() - closed < 30, "vLLM still runs the request 30 s after the close"
        time.sleep(0.02)
    stopped_after_s = time.monotonic() - closed
    time.sleep(1.0)
    final = upstream.stats()
    return Hangup(
        received=received,
        generated=final["tokens_generated"] - before,
        stopped_after_s=stopped_after_s,
        still_after_s=final["tokens_generated"] - stats["tokens_generated"],
    )


def assert_aborted(result: Hangup) -> None:
    assert result.still_after_s == 0, result
    assert result.stopped_after_s < STOP_WITHIN_S, result
    assert result.received <= result.generated < MAX_TOKENS // 2, result


def test_hang_up_on_the_server_aborts_in_vllm(upstream: Upstream) -> None:
    result = hang_up(upstream.url, upstream.headers, upstream)
    print(f"direct to the server: {result}")
    assert_aborted(result)


def test_hang_up_on_the_gateway_aborts_in_vllm(product: Product, upstream: Upstream) -> None:
    client_id = f"hangup-{uuid.uuid4().hex[:12]}"
    headers = {**product.gateway.developer.headers, "x-request-id": client_id}
    result = hang_up(product.gateway.url, headers, upstream)
    print(f"through the gateway: {result}")
    assert_aborted(result)
    deadline = time.monotonic() + 10
    while (row := product.ledger_row(client_id))["status"] == "started":
        assert time.monotonic() < deadline, "the aborted request was never settled"
        time.sleep(0.05)
    # The ledger has what the upstream reported before the hang-up: at most the step that
    # was under way when the abort arrived is missing.
    assert row["status"] == "aborted"
    assert result.received <= row["completion_tokens"] <= result.generated
