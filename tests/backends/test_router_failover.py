"""The gateway in front of two `api.inference_server` processes: spread, failover, re-admission."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backends.router import BackendSlot
from billing.models import LedgerEntry
from tests.api.openai_support import Gateway, live_gateway
from tests.billing.conftest import ledger_by_client_id
from tests.inference.server_process import API_KEY, ServerProcess

HEALTH_INTERVAL_S = 0.3


@dataclass
class Cluster:
    gateway: Gateway
    servers: list[ServerProcess]

    def slots(self) -> list[BackendSlot]:
        router = self.gateway.generation.router
        assert router is not None
        return router.routes["tiny"].slots

    def served(self) -> list[int]:
        return [slot.served for slot in self.slots()]

    def healthy(self) -> list[bool]:
        return [slot.healthy for slot in self.slots()]


def remote_config(model_dir: Path, servers: list[ServerProcess]) -> dict[str, Any]:
    backends = [
        {"type": "remote", "name": f"server-{i}", "base_url": s.url, "api_key": API_KEY}
        for i, s in enumerate(servers)
    ]
    return {
        "router": {"health_interval_s": HEALTH_INTERVAL_S, "affinity_tokens": 32},
        "models": [{"id": "tiny", "tokenizer": str(model_dir), "backends": backends}],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("logs")
    servers = [ServerProcess(tiny_model_dir, logs, name=f"server-{i}") for i in range(2)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        config = remote_config(tiny_model_dir, servers)
        with live_gateway(tmp_path_factory.mktemp("gw"), config) as gateway:
            yield Cluster(gateway, servers)
    finally:
        for server in servers:
            server.stop()


def sdk(cluster: Cluster) -> openai.AsyncOpenAI:
    gw = cluster.gateway
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


def wait_for(condition: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def eventually(condition: Any, within_s: float) -> None:
    """`wait_for` for async tests: the event loop keeps running while we wait."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_load_is_spread_over_both_servers(cluster: Cluster) -> None:
    before = cluster.served()
    async with sdk(cluster) as client:
        await asyncio.gather(
            *(
                client.completions.create(model="tiny", prompt=f"Story {i}:", max_tokens=4)
                for i in range(16)
            )
        )
    spread = [after - b for after, b in zip(cluster.served(), before, strict=True)]
    assert sum(spread) == 16 and min(spread) >= 4, spread


async def test_shared_prefix_sticks_to_one_server(cluster: Cluster) -> None:
    prefix = " ".join(f"word{i}" for i in range(40))
    before = cluster.served()
    async with sdk(cluster) as client:
        for i in range(6):
            await client.completions.create(model="tiny", prompt=f"{prefix} {i}", max_tokens=2)
    spread = sorted(after - b for after, b in zip(cluster.served(), before, strict=True))
    assert spread == [0, 6]


async def test_gateway_matches_a_server_called_directly(cluster: Cluster) -> None:
    direct = openai.AsyncOpenAI(
        base_url=f"{cluster.servers[0].url}/v1", api_key=API_KEY, max_retries=0
    )
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "prompt": "The mill wheel",
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": 2,
        "echo": True,
    }
    async with sdk(cluster) as client, direct:
        via_gateway = await client.completions.create(**kwargs)
        expected = await direct.completions.create(**kwargs)
    assert via_gateway.choices[0].text == expected.choices[0].text
    ours, theirs = via_gateway.choices[0].logprobs, expected.choices[0].logprobs
    assert ours is not None and theirs is not None
    assert ours.tokens == theirs.tokens and ours.token_logprobs == theirs.token_logprobs
    assert via_gateway.usage == expected.usage


async def test_disconnect_through_the_gateway_aborts_upstream(cluster: Cluster) -> None:
    gw = cluster.gateway
    body = {
        "model": "tiny",
        "prompt": "A very long story:",
        "max_tokens": 900,
        "stream": True,
        "ignore_eos": True,
    }
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
        http.stream("POST", "/v1/completions", json=body, headers=gw.developer.headers) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                break
        assert sum(s.stats()["running"] for s in cluster.servers) == 1
    started = time.monotonic()
    wait_for(lambda: sum(s.stats()["running"] for s in cluster.servers) == 0, within_s=1.0)
    assert time.monotonic() - started < 1.0


def generated(cluster: Cluster) -> int:
    return sum(s.stats()["tokens_generated"] for s in cluster.servers)


async def test_an_abandoned_stream_is_billed_what_the_upstream_engine_generated(
    cluster: Cluster,
) -> None:
    """The client leaves mid-stream: the server's engine goes on for a step or more before
    it notices, past what the gateway read. The bill is the engine's count (it reports it)."""
    gw = cluster.gateway
    before = generated(cluster)
    body = {
        "model": "tiny",
        "prompt": "A very long story:",
        "max_tokens": 900,
        "stream": True,
        "ignore_eos": True,
        "logprobs": 1,
    }
    headers = {**gw.developer.headers, "x-request-id": "abandoned"}
    received = 0
    async with (
        httpx.AsyncClient(base_url=gw.url, timeout=30) as http,
        http.stream("POST", "/v1/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                received += len(json.loads(line[6:])["choices"][0]["logprobs"]["tokens"])
                if received >= 20:
                    break
    await eventually(lambda: sum(s.stats()["running"] for s in cluster.servers) == 0, 5)

    async def aborted_row() -> LedgerEntry | None:
        row = (await ledger(gw)).get("abandoned")
        return row if row is not None and row.status == "aborted" else None

    deadline = time.monotonic() + 10
    while (row := await aborted_row()) is None:
        assert time.monotonic() < deadline, "the abandoned stream was not settled"
        await asyncio.sleep(0.1)
    engine_generated = generated(cluster) - before
    assert engine_generated > received  # the upstream went on after the client had left
    assert row.completion_tokens == engine_generated


async def long_stream(client: openai.AsyncOpenAI, received: list[str]) -> None:
    """A stream that outlives its server; the gateway must end it with an error event."""
    stream = await client.completions.create(
        model="tiny",
        prompt="An endless tale:",
        max_tokens=900,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        received.append(chunk.choices[0].text)


async def ledger(gateway: Gateway) -> dict[str, LedgerEntry]:
    return await ledger_by_client_id(gateway.app.state.services.settings.database_url)


async def test_killing_a_server_under_load_fails_only_its_in_flight_streams(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Non-streamed requests on the dead server run again on the other one (their clients
    had received nothing), billed as that run only; the stream under way ends in an error."""
    caplog.set_level(logging.INFO, logger="api.generation.job")
    caplog.set_level(logging.INFO, logger="backends.router")
    outcomes: list[tuple[float, float, str]] = []  # (start, end, "ok" or error code)
    usages: dict[str, tuple[int, int]] = {}
    killed_at: list[float] = []
    streamed: list[str] = []

    async def one(client: openai.AsyncOpenAI, i: int) -> None:
        start = time.monotonic()
        try:
            done = await client.completions.create(
                model="tiny",
                prompt=f"Load {i}:",
                max_tokens=48,  # long enough to be mid-way on the server that is killed
                extra_headers={"x-request-id": f"load-{i}"},
            )
            outcomes.append((start, time.monotonic(), "ok"))
            assert done.usage is not None
            usages[f"load-{i}"] = (done.usage.prompt_tokens, done.usage.completion_tokens)
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc  # never a 500
            outcomes.append((start, time.monotonic(), str(exc.code)))

    stop = asyncio.Event()

    async def load(client: openai.AsyncOpenAI, worker: int) -> None:
        i = 0
        while not stop.is_set():
            await one(client, worker * 1000 + i)
            i += 1

    async with sdk(cluster) as client:
        stream = asyncio.create_task(long_stream(client, streamed))
        await eventually(lambda: sum(s.stats()["running"] for s in cluster.servers) == 1, 5)
        # The victim is the server running the long stream.
        index = next(i for i, s in enumerate(cluster.servers) if s.stats()["running"] == 1)
        victim = cluster.servers[index]

        async def killer() -> None:
            await asyncio.sleep(1.0)
            # Kill it while it runs a non-streamed request beside the stream.
            deadline = time.monotonic() + 10
            while (await asyncio.to_thread(victim.stats))["running"] < 2:
                assert time.monotonic() < deadline, "the victim never ran a second request"
            await asyncio.to_thread(victim.kill)
            killed_at.append(time.monotonic())
            await asyncio.sleep(1.5)  # keep the load on while the router notices
            stop.set()

        await asyncio.gather(*(load(client, w) for w in range(6)), killer())
        with pytest.raises(openai.APIError, match="Generation failed"):
            await stream  # an error event, not a silent end and not [DONE]
    assert streamed, "the stream had produced tokens before its server died"
    [kill] = killed_at
    assert [o for o in outcomes if o[2] != "ok"] == []
    assert sum(1 for start, *_ in outcomes if start > kill) > 0
    # run again by the job (it had started) or by the router (it had not yet)
    retried = [
        r
        for r in caplog.records
        if "running it again" in r.getMessage() or "retrying request" in r.getMessage()
    ]
    assert retried, "no request was under way on the killed server"
    rows = await ledger(cluster.gateway)
    for request_id, usage in usages.items():  # billed exactly what each client received
        row = rows[request_id]
        assert (row.status, row.prompt_tokens, row.completion_tokens) == ("ok", *usage)
    expected = [i != index for i in range(2)]
    assert cluster.healthy() == expected

    victim.start()
    victim.wait_ready()
    wait_for(lambda: cluster.healthy() == [True, True], within_s=5 * HEALTH_INTERVAL_S + 2)
    before = cluster.served()
    async with sdk(cluster) as client:
        await asyncio.gather(
            *(
                client.completions.create(model="tiny", prompt=f"Back {i}", max_tokens=2)
                for i in range(8)
            )
        )
    assert cluster.served()[index] > before[index]
