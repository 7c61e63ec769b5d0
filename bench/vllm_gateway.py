"""vLLM behind the gateway: throughput and time to first token, direct and through it.

    make vllm                                   # once; on a GPU host: VLLM_PACKAGE=vllm==0.32.0
    python -m bench.vllm_gateway --model DIR_OR_HUB_ID --tensor-parallel-size 2 [--device cuda]
    python -m bench.vllm_gateway --model tiny-llama --device cpu     # the smoke run used here

Unattended, in under ten minutes (`--budget-s`, default 540, bounds every wait): starts
vLLM's own OpenAI server (`--tensor-parallel-size N`), runs the workload against it, stops
it; starts our inference server (`--engine vllm`, same flags), runs the workload against it
directly and then through the gateway (`api.app`, SQLite ledger, limits and metering on,
`--gateway-workers` uvicorn workers); prints a table and writes
`bench/results/vllm_gateway.json` with the machine's load. The workload: `--requests`
streamed completions of `--prompt-tokens` random token ids each, `--max-tokens` generated
(`ignore_eos`), `--concurrency` at a time. Output tokens/s counts completion tokens from
`usage`; TTFT is the time to the first streamed token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from rich.console import Console
from rich.table import Table

from bench.gateway_load import cpu_delta, serve
from bench.gateway_setup import GatewaySetup
from bench.vllm_server import Launch, VllmServer, free_port, ours, theirs, vllm_python
from inference.checkpoints.hub import resolve_model_dir
from inference.text.tokenizer import Tokenizer

RESULTS = Path(__file__).parent / "results" / "vllm_gateway.json"
MODEL = "bench-model"
UPSTREAM_KEY = "bench-upstream-key"


@dataclass
class Load:
    target: str
    requests: int
    seconds: float
    completion_tokens: int
    errors: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    latency_p50_ms: float
    gateway_cpu_ms: float | None = None  # per request, all gateway workers

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds


async def one_request(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, float, int]:
    """(TTFT, total seconds, completion tokens) of one streamed completion."""
    start = time.perf_counter()
    first, tokens = 0.0, 0
    async with session.post(f"{url}/v1/completions", json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {(await response.text())[:300]}")
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and not first:
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first, time.perf_counter() - start, tokens


async def run_load(name: str, url: str, headers: dict[str, str], args: argparse.Namespace) -> Load:
    rng = random.Random(0)
    prompts = [
        [rng.randrange(min(100, args.vocab // 2), args.vocab) for _ in range(args.prompt_tokens)]
        for _ in range(args.requests)
    ]
    queue = list(enumerate(prompts))
    results: list[tuple[float, float, int]] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=args.budget_s)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while queue:
            _, prompt = queue.pop()
            body = {
                "model": MODEL, "prompt": prompt, "max_tokens": args.max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True},
            }  # fmt: skip
            try:
                results.append(await one_request(session, url, body, headers))
            except (RuntimeError, aiohttp.ClientError) as exc:
                errors += 1
                print(f"{name}: {exc}")

    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    seconds = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results) or [0.0]
    return Load(
        target=name,
        requests=len(results),
        seconds=seconds,
        completion_tokens=sum(r[2] for r in results),
        errors=errors,
        ttft_p50_ms=1000 * statistics.median(ttfts),
        ttft_p95_ms=1000 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
        latency_p50_ms=1000 * statistics.median(r[1] for r in results) if results else 0.0,
    )


@contextmanager
def vllm_process(launch: Launch, tmp: Path, name: str, args: argparse.Namespace) -> Iterator[Any]:
    server = VllmServer(launch, tmp / f"{name}.log", kv_cache_gib=args.kv_cache_gib)
    server.start()
    try:
        started = server.wait_ready(args.budget_s)
        print(f"{name}: ready after {started:.1f} s")
        yield server
    finally:
        server.stop()


def vllm_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--max-model-len", str(args.max_model_len)]
    if args.device == "cpu":
        flags += ["--enforce-eager", "--dtype", "float32"]
    return flags


def gateway_config(tmp: Path, upstream_url: str, args: argparse.Namespace) -> GatewaySetup:
    setup = GatewaySetup(tmp, upstream_url)
    backend = {"type": "remote", "base_url": upstream_url, "api_key": UPSTREAM_KEY,
               "max_outstanding": 4096}  # fmt: skip
    model = {"id": MODEL, "tokenizer": args.model, "backends": [backend]}
    config = {"router": {"health_interval_s": 5}, "models": [model]}
    (tmp / "models.yaml").write_text(yaml.safe_dump(config))
    from migrations.runner import upgrade

    upgrade(setup.db_url)
    return setup


def measure(args: argparse.Namespace, tmp: Path) -> tuple[list[Load], dict[str, float]]:
    loads, startup = [], {}
    common = {"served_model_name": MODEL, "tensor_parallel_size": args.tp}
    if not args.skip_vllm_server:
        launch = theirs(args.model, port=free_port(), **common, flags=vllm_flags(args))
        with vllm_process(launch, tmp, "vllm-server", args) as server:
            startup["vllm's own server"] = server.ready_after_s
            loads.append(asyncio.run(run_load("vLLM's own server", server.url, {}, args)))
    launch = ours(
        args.model, port=free_port(), **common, api_key=UPSTREAM_KEY, flags=vllm_flags(args)
    )
    with ExitStack() as stack:
        server = stack.enter_context(vllm_process(launch, tmp, "our-server", args))
        startup["our server (--engine vllm)"] = server.ready_after_s
        auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
        asyncio.run(run_load("warm-up", server.url, auth, warm_up(args)))
        loads.append(asyncio.run(run_load("our server, direct", server.url, auth, args)))
        setup = gateway_config(tmp, server.url, args)
        env = setup.env(limits=True, metering=True, redis_url=args.redis_url)
        gateway = stack.enter_context(
            serve("gateway", "api.app:create_app", args.gateway_workers, env, "/healthz")
        )
        key = {"Authorization": f"Bearer {setup.onboard(gateway.url)}"}
        asyncio.run(run_load("warm-up", gateway.url, key, warm_up(args)))
        cpu_before = gateway.read()
        loads.append(asyncio.run(run_load("gateway -> our server", gateway.url, key, args)))
        loads[-1].gateway_cpu_ms = 1000 * cpu_delta(cpu_before, gateway.read()) / args.requests
    return loads, startup


def warm_up(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "requests": 2, "concurrency": 2, "max_tokens": 2})


def show(loads: list[Load], startup: dict[str, float], console: Console) -> None:
    table = Table(title="vLLM, direct and through the gateway (same workload)")
    for column in ("target", "requests", "errors", "output tok/s", "TTFT p50 ms",
                   "TTFT p95 ms", "latency p50 ms", "gateway CPU ms/req"):  # fmt: skip
        table.add_column(column, justify="left" if column == "target" else "right")
    for load in loads:
        table.add_row(
            load.target, str(load.requests), str(load.errors), f"{load.tokens_per_s:.1f}",
            f"{load.ttft_p50_ms:.0f}", f"{load.ttft_p95_ms:.0f}", f"{load.latency_p50_ms:.0f}",
            "" if load.gateway_cpu_ms is None else f"{load.gateway_cpu_ms:.2f}",
        )  # fmt: skip
    console.print(table)
    for name, seconds in startup.items():
        console.print(f"start-up, {name}: {seconds:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_gateway", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint dir or hub id")
    parser.add_argument("--tensor-parallel-size", "--tp", type=int, default=1, dest="tp")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gateway-workers", type=int, default=2)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="CPU only")
    parser.add_argument("--redis-url", help="the limiter's Redis (default: in-process)")
    parser.add_argument("--skip-vllm-server", action="store_true", help="ours only")
    parser.add_argument("--budget-s", type=float, default=540.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if vllm_python() is None:
        raise SystemExit("no vLLM environment: run `make vllm` first")
    # Both servers and the gateway read this directory (a hub id is fetched once, here).
    model_dir = resolve_model_dir(args.model)
    args.model, args.vocab = str(model_dir), Tokenizer.from_dir(model_dir).vocab_size
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        loads, startup = measure(args, Path(tmp))
    show(loads, startup, console)
    console.print(f"load average: {os.getloadavg()}")
    result = {
        "args": vars(args),
        "load_average": os.getloadavg(),
        "startup_s": startup,
        "loads": [{**asdict(load), "tokens_per_s": load.tokens_per_s} for load in loads],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
