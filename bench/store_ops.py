"""PostgreSQL writes and Redis commands per request, counted by the servers themselves.

    python -m bench.store_ops [--requests 400] [--concurrency 1 32] [--workers 1]

The gateway (limits and metering on) runs against a fresh PostgreSQL database and a Redis
server of its own (`redis-server` on a free port, so nobody else's commands count), in
front of the instant mock upstream. For each concurrency, N streamed completions; then
PostgreSQL's `pg_stat_database` (transactions committed, rows inserted/updated/deleted;
read after its backends have flushed their counters, which they do within ten idle
seconds) and Redis's `INFO commandstats` (calls per command, the scripts' own commands
included) are compared before and after. Also the gateway's CPU per request. Prints a table,
writes `bench/results/store_ops.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from bench.gateway_load import Server, cpu_delta, free_port, serve
from bench.gateway_setup import GatewaySetup

RESULTS = Path(__file__).parent / "results" / "store_ops.json"
PG_FLUSH_S = 11.0  # PostgreSQL backends flush their counters after 10 s idle
BODY = {"model": "tiny", "prompt": "Hello, world.", "max_tokens": 16, "stream": True}


@contextmanager
def private_redis() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _admin(server_url: str, statement: str) -> None:
    url = make_url(server_url)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                 database=url.database)  # fmt: skip
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"bench_store_ops_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_counts(database_url: str) -> dict[str, int]:
    url = make_url(database_url)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                 database=url.database)  # fmt: skip
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted"
            " FROM pg_stat_database WHERE datname = $1",
            url.database,
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


def redis_counts(url: str) -> dict[str, int]:
    stats = redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def _load(url: str, key: str, requests: int, concurrency: int) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    remaining = list(range(requests))
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while remaining:
            remaining.pop()
            async with session.post(f"{url}/v1/completions", json=BODY, headers=headers) as r:
                await r.read()
                failed += r.status != 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def measure_one(
    gateway: Server, key: str, database_url: str, redis_url: str, args: argparse.Namespace,
    concurrency: int,
) -> dict[str, Any]:  # fmt: skip
    time.sleep(PG_FLUSH_S)
    pg_before, redis_before = asyncio.run(_pg_counts(database_url)), redis_counts(redis_url)
    cpu_before = gateway.read()
    failed = asyncio.run(_load(gateway.url, key, args.requests, concurrency))
    cpu_after = gateway.read()
    time.sleep(PG_FLUSH_S)
    pg_after, redis_after = asyncio.run(_pg_counts(database_url)), redis_counts(redis_url)
    n = args.requests
    pg = {k: (pg_after[k] - pg_before[k]) / n for k in pg_after}
    commands = {
        k: (redis_after[k] - redis_before.get(k, 0)) / n
        for k in redis_after
        if redis_after[k] != redis_before.get(k, 0) and k != "info"
    }
    return {
        "concurrency": concurrency,
        "requests": n,
        "failed": failed,
        "gateway_cpu_ms_per_request": 1000 * cpu_delta(cpu_before, cpu_after) / n,
        "postgres_per_request": pg,
        "redis_commands_per_request": commands,
        "load_average": os.getloadavg(),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-store-ops-") as tmp:
        redis_url = stack.enter_context(private_redis())
        database_url = stack.enter_context(fresh_database(args.database_url))
        mock = stack.enter_context(
            serve("mock", "bench.gateway_servers:mock_app", 1, {}, "/health")
        )
        setup = GatewaySetup(Path(tmp), mock.url, database_url=database_url)
        setup.write_config()
        env = setup.env(limits=True, metering=True, redis_url=redis_url)
        gateway = stack.enter_context(
            serve("gateway", "api.app:create_app", args.workers, env, "/healthz")
        )
        key = setup.onboard(gateway.url)
        asyncio.run(_load(gateway.url, key, 20, 4))  # warm: key cache, pools, scripts loaded
        for concurrency in args.concurrency:
            results.append(measure_one(gateway, key, database_url, redis_url, args, concurrency))
    return results


def show(results: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Per request through the gateway (limits + metering, streamed)")
    for column in ("concurrency", "gateway CPU ms", "PG transactions", "PG rows written",
                   "Redis commands", "of which scripts", "load average"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        pg, commands = r["postgres_per_request"], r["redis_commands_per_request"]
        rows = pg["tup_inserted"] + pg["tup_updated"] + pg["tup_deleted"]
        scripts = sum(v for k, v in commands.items() if k in ("evalsha", "eval", "fcall"))
        table.add_row(
            str(r["concurrency"]), f"{r['gateway_cpu_ms_per_request']:.2f}",
            f"{pg['xact_commit']:.2f}", f"{rows:.2f}", f"{sum(commands.values()):.2f}",
            f"{scripts:.2f}", " ".join(f"{x:.1f}" for x in r["load_average"]),
        )  # fmt: skip
    console.print(table)
    for r in results:
        detail = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(r["redis_commands_per_request"].items())
        )
        console.print(f"c={r['concurrency']} Redis: {detail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store_ops", description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or
        "postgresql://postgres@127.0.0.1:5432/test", help="a PostgreSQL server (a database is made)"
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    show(results, Console(width=140))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
