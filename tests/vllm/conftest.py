"""Real vLLM (its CPU build, `make vllm`) behind our inference server, started once a session.

Every module here sets `pytestmark = pytest.mark.vllm`: the default suite deselects them
(pyproject's addopts) and `make test-vllm` (run by `.ci/run`) selects them. Without the
vLLM environment they skip, and fail under CI=true. The server runs the tiny Llama
checkpoint in float32 (vLLM's CPU build would otherwise downcast to bfloat16), eager (no
torch.compile: minutes saved), with a 1 GiB KV cache, `max_logprobs=5` (so a request beyond
it shows how vLLM's refusals map) and OpenMP bound to both cores.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.vllm_server import VllmServer, free_port, ours, vllm_env_dir, vllm_python
from tests.api.openai_support import Gateway, live_gateway

API_KEY = "vllm-upstream-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "tiny"
ENGINE_OPTIONS: dict[str, Any] = {"dtype": "float32", "max_logprobs": 3, "max_model_len": 1024}
STARTUP_TIMEOUT_S = 900.0  # three processes import vLLM and torch; minutes on a busy machine


def require_vllm() -> Path:
    python = vllm_python()
    if python is None:
        message = f"vLLM is not installed at {vllm_env_dir()} (`make vllm` builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true: the vllm tests must run")
        pytest.skip(message)
    return python


class Upstream:
    """A running vLLM-backed server and its own counters (`/stats`: vLLM's stat loggers).

    One HTTP client for every call: `httpx.get` builds a client, TLS context included, each
    time (19 ms of CPU here). Tests poll `/stats` every 20 ms while a gateway serves from a
    thread of this same process, and that polling held the GIL enough to delay the gateway's
    handling of a hang-up by up to 5 s.
    """

    def __init__(self, server: VllmServer) -> None:
        self.server = server
        self.url = server.url
        self.headers = HEADERS
        self._http = httpx.Client(base_url=server.url, timeout=10)

    def stats(self) -> dict[str, Any]:
        response = self._http.get("/stats", headers=self.headers)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def health(self) -> int:
        return self._http.get("/health").status_code

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self._http.post(path, json=body, headers=self.headers, timeout=300)

    def close(self) -> None:
        self._http.close()


def start_upstream(
    model_dir: Path, log_dir: Path, *, name: str, tensor_parallel_size: int = 1
) -> VllmServer:
    require_vllm()
    launch = ours(
        model_dir,
        port=free_port(),
        served_model_name=MODEL,
        tensor_parallel_size=tensor_parallel_size,
        api_key=API_KEY,
        options=ENGINE_OPTIONS,
        flags=["--enforce-eager"],
    )
    server = VllmServer(launch, log_dir / f"{name}.log")
    server.start()
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
        # vLLM's first step on CPU takes seconds to tens of seconds (kernels set up on first
        # use): spend it here, not inside a test's timing.
        warm = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 2}
        httpx.post(f"{server.url}/v1/completions", json=warm, headers=HEADERS, timeout=600)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def upstream(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """Our inference server with `--engine vllm` on the tiny Llama, one per session."""
    server = start_upstream(tiny_llama_dir, tmp_path_factory.mktemp("vllm-logs"), name="tp1")
    upstream = Upstream(server)
    try:
        yield upstream
    finally:
        upstream.close()
        server.stop()


@dataclass
class Product:
    """The gateway in front of the server, and the file of its ledger."""

    gateway: Gateway
    ledger_path: Path

    def ledger_row(self, client_request_id: str) -> dict[str, Any]:
        with sqlite3.connect(self.ledger_path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM ledger WHERE client_request_id = ?", (client_request_id,)
            ).fetchall()
        assert len(rows) == 1, f"{len(rows)} ledger rows for {client_request_id}"
        return dict(rows[0])


@pytest.fixture(scope="session")
def product(
    upstream: Upstream, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Product]:
    """The whole product in front of it: gateway (SQLite ledger) -> remote backend -> server."""
    backend = {"type": "remote", "name": "vllm", "base_url": upstream.url, "api_key": API_KEY}
    config = {
        "router": {"health_interval_s": 0.5},
        "models": [{"id": MODEL, "tokenizer": str(tiny_llama_dir), "backends": [backend]}],
    }
    directory = tmp_path_factory.mktemp("vllm-gateway")
    with live_gateway(directory, config) as live:
        yield Product(live, directory / "gateway.db")  # where live_gateway puts it
