"""llama.cpp's `llama-server` on the `bench.engine --peers` workload, driven over HTTP.

One slot per request (`-np`), the F32 GGUF, `--threads` threads; every request is posted
at t=0 to `/completion` as token ids, greedy (top_k 1), EOS ignored, prompt cache off, and
streamed: each event's tokens are stamped as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.peer_models import CACHE

BINARY = (
    CACHE / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp" / "build" / "bin"
) / "llama-server"
INSTALL = "make llama-server"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    model: Path, *, slots: int, context: int, threads: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [
        str(BINARY), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(slots * context),
        "--no-webui",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("llama-server did not become healthy in 10 minutes")


async def _one(
    client: httpx.AsyncClient, url: str, prompt: list[int], new_tokens: int, start: float
) -> tuple[list[float], list[int]]:
    body = {
        "prompt": prompt, "n_predict": new_tokens, "temperature": 0.0, "top_k": 1,
        "ignore_eos": True, "cache_prompt": False, "stream": True, "return_tokens": True,
    }  # fmt: skip
    stamps: list[float] = []
    tokens: list[int] = []
    async with client.stream("POST", f"{url}/completion", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: ") :])
            new = event.get("tokens") or []
            stamps.extend([time.perf_counter() - start] * len(new))
            tokens.extend(new)
    return stamps, tokens


async def _serve(url: str, prompts: list[list[int]], new_tokens: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(prompts) + 1)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        await _one(client, url, prompts[0][:16], 4, time.perf_counter())  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(
            *(_one(client, url, prompt, new_tokens, start) for prompt in prompts)
        )
    return {
        "wall_s": time.perf_counter() - start,
        "stamps_s": [stamps for stamps, _ in results],
        "first_tokens": results[0][1],
    }


def run(
    model: Path, prompts: list[list[int]], new_tokens: int, *, context: int, threads: int
) -> dict[str, Any]:
    process, url = start(model, slots=len(prompts), context=context, threads=threads)
    try:
        return asyncio.run(_serve(url, prompts, new_tokens))
    finally:
        process.terminate()
        process.wait(timeout=60)
