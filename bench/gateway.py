"""What the gateway costs per request, against a mock upstream and a bare forwarder.

    apt-get install -y wrk            # the load generator (`make bench-gateway` does this)
    python -m bench.gateway [--workers 1 2] [--routes chat completions] [--connections 32]
        [--redis-url redis://...] [--database-url postgresql://.../sg_bench --fresh-database]

Rows, each server under test with the same number of uvicorn worker processes:
  (a) upstream     a tiny FastAPI app answering instantly with a fixed completion, called
                   directly;
  (c) forwarder    a minimal FastAPI app forwarding the request to the upstream with the same
                   HTTP client use as the gateway (aiohttp's pooled session) and no checks:
                   the ceiling of a Python gateway here;
  (b) gateway      our app in front of the upstream (a remote backend), auth on; rate limits
                   (Redis) and metering (PostgreSQL) switched on and off, so the cost of each
                   stage shows side by side.
Both generation routes are measured (`--routes`), with each worker count (`--workers`), in
interleaved rounds (a slow spell of this shared machine hits every row alike; the median
round is reported). Each round starts one row later than the one before, so no row is always
measured first or last in a round. "÷ forwarder" is the median over rounds of the row's
requests/s over the forwarder's in the same round. wrk measures requests/s, p50 and p99 at
`--connections` and p50/p99 at 1 connection; CPU per request is read for the server under
test, PostgreSQL and Redis separately (bench/gateway_load.py). The 1-minute load average
is recorded with every round. Writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.gateway_load import (
    COUNTER,
    CpuMeter,
    Load,
    PostgresCpu,
    RedisCpu,
    Server,
    Target,
    run_wrk,
    serve,
)
from bench.gateway_setup import VARIANTS, GatewaySetup

RESULTS = Path(__file__).parent / "results" / "gateway.json"
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": "tiny",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"Hello, world. Tell me a story. {COUNTER}"},
            ],
            "max_tokens": 16,
        },
    ),
    "completions": (
        "/v1/completions",
        {"model": "tiny", "prompt": f"Hello, world. Tell me a story. {COUNTER}", "max_tokens": 16},
    ),
}
UPSTREAM, FORWARDER = "(a) upstream directly", "(c) bare forwarder"


@dataclass
class Row:
    name: str
    runs: dict[str, dict[int, list[Load]]] = field(default_factory=dict)  # route -> conns

    def median(self, route: str, connections: int) -> Load:
        """The run with the median throughput."""
        runs = sorted(self.runs[route][connections], key=lambda x: x.requests_per_s)
        return runs[len(runs) // 2]

    def ratio(self, other: Row, route: str, connections: int) -> float:
        """Median over rounds of this row's requests/s over `other`'s in the same round."""
        pairs = zip(self.runs[route][connections], other.runs[route][connections], strict=True)
        return statistics.median(a.requests_per_s / b.requests_per_s for a, b in pairs)


@dataclass
class Measured:
    """One worker count: its rows and the load average of each round."""

    workers: int
    rows: list[Row]
    load_average: list[float] = field(default_factory=list)


def measure(
    targets: list[tuple[Row, dict[str, Target]]],
    args: argparse.Namespace,
    tmp: Path,
    meters: tuple[CpuMeter, ...],
    console: Console,
) -> list[float]:
    """Interleaved rounds over every row and route; returns the load average per round."""
    for _, by_route in targets:  # warm-up: connection pools, caches, the tokenizer
        for target in by_route.values():
            run_wrk(target, 8, 2, tmp, meters)
    loads: list[float] = []
    for round_ in range(args.rounds):
        first = round_ % len(targets)  # each round starts one row later (see the module doc)
        for row, by_route in targets[first:] + targets[:first]:
            for route, target in by_route.items():
                for connections in (1, args.connections):
                    load = run_wrk(target, connections, args.duration, tmp, meters)
                    row.runs.setdefault(route, {}).setdefault(connections, []).append(load)
        loads.append(os.getloadavg()[0])
        console.print(f"round {round_ + 1}/{args.rounds} done (load average {loads[-1]:.2f})")
    return loads


def run_workers(
    workers: int,
    args: argparse.Namespace,
    setup: GatewaySetup,
    tmp: Path,
    meters: tuple[CpuMeter, ...],
) -> Measured:
    """Start every server with `workers` workers, measure them all, stop them."""
    console = Console(width=160)
    with ExitStack() as stack:
        upstream = stack.enter_context(
            serve("upstream", "bench.gateway_servers:mock_app", workers, {}, "/health")
        )
        forwarder = stack.enter_context(
            serve(
                "forwarder",
                "bench.gateway_servers:passthrough_app",
                workers,
                {"BENCH_MOCK_URL": upstream.url},
                "/health",
            )
        )
        servers: list[tuple[str, Server, str | None]] = [
            (UPSTREAM, upstream, None),
            (FORWARDER, forwarder, None),
        ]
        setup.mock_url = upstream.url  # one database and key for every worker count
        setup.write_config()
        for variant in args.gateways:
            name, limits, metering = VARIANTS[variant]
            env = setup.env(limits=limits, metering=metering, redis_url=args.redis_url)
            gateway = stack.enter_context(
                serve(name, "api.app:create_app", workers, env, "/healthz")
            )
            servers.append((name, gateway, setup.onboard(gateway.url)))
        targets = [
            (
                Row(name),
                {r: Target(server, *ROUTES[r], key) for r in args.routes},
            )
            for name, server, key in servers
        ]
        console.print(f"{workers} worker(s): {len(targets)} servers up, measuring")
        load_average = measure(targets, args, tmp, meters, console)
    return Measured(workers, [row for row, _ in targets], load_average)


# ---- report ----------------------------------------------------------------------------------


def table(measured: Measured, route: str, connections: int) -> Table:
    loads = ", ".join(f"{x:.2f}" for x in measured.load_average)
    out = Table(
        title=f"{ROUTES[route][0]}: {measured.workers} uvicorn worker(s) per server, wrk, "
        f"median of {len(measured.load_average)} rounds (load average per round: {loads})"
    )
    columns = (
        "row", f"req/s @{connections}", "÷ forwarder", "p50 @1", "p99 @1",
        f"p50 @{connections}", f"p99 @{connections}", "CPU ms/req", "+ PostgreSQL", "+ Redis",
        "errors",
    )  # fmt: skip
    for column in columns:
        out.add_column(column, justify="left" if column == "row" else "right")
    forwarder = next(r for r in measured.rows if r.name == FORWARDER)
    for row in measured.rows:
        one, many = row.median(route, 1), row.median(route, connections)
        out.add_row(
            row.name,
            f"{many.requests_per_s:,.0f}",
            f"{row.ratio(forwarder, route, connections):.2f}",
            f"{one.p50_ms:.2f} ms",
            f"{one.p99_ms:.2f} ms",
            f"{many.p50_ms:.2f} ms",
            f"{many.p99_ms:.2f} ms",
            f"{many.cpu_ms['gateway']:.2f}",
            _cpu(many, "postgres"),
            _cpu(many, "redis"),
            str(one.errors + many.errors),
        )
    return out


def _cpu(load: Load, meter: str) -> str:
    return f"{load.cpu_ms[meter]:.2f}" if meter in load.cpu_ms else "-"


def verdicts(measured: Measured, route: str, connections: int) -> dict[str, Any]:
    """Issue #17's targets, for this worker count and route."""
    rows = {row.name: row for row in measured.rows}

    def many(name: str) -> Load | None:
        return rows[name].median(route, connections) if name in rows else None

    def p50_added(name: str) -> float | None:
        if name not in rows:
            return None
        return round(rows[name].median(route, 1).p50_ms - rows[UPSTREAM].median(route, 1).p50_ms, 3)

    def vs_forwarder(name: str) -> float:
        return round(rows[name].ratio(rows[FORWARDER], route, connections), 3)

    auth, full = many(VARIANTS["auth"][0]), many(VARIANTS["full"][0])
    out: dict[str, Any] = {"workers": measured.workers, "route": route}
    if full is not None:
        out["full_vs_forwarder"] = vs_forwarder(VARIANTS["full"][0])
        out["full_vs_forwarder_met"] = out["full_vs_forwarder"] >= 0.33
        out["full_gateway_cpu_ms"] = full.cpu_ms["gateway"]
        out["full_gateway_cpu_met"] = full.cpu_ms["gateway"] <= 1.5
        out["full_p50_c1_added_ms"] = p50_added(VARIANTS["full"][0])
    if auth is not None:
        out["auth_vs_forwarder"] = vs_forwarder(VARIANTS["auth"][0])
        out["auth_vs_forwarder_met"] = out["auth_vs_forwarder"] >= 0.6
        out["auth_p50_c1_added_ms"] = p50_added(VARIANTS["auth"][0])
        out["auth_p50_c1_met"] = (out["auth_p50_c1_added_ms"] or 0) <= 1.0
    out["forwarder_p50_c1_added_ms"] = p50_added(FORWARDER)
    return out


def report(all_measured: list[Measured], args: argparse.Namespace) -> None:
    console = Console(width=160)
    summary = []
    for measured in all_measured:
        for route in args.routes:
            console.print(table(measured, route, args.connections))
            summary.append(verdicts(measured, route, args.connections))
    for entry in summary:
        console.print(entry)
    payload = {
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.database_url else "sqlite",
        "limiter_store": "redis" if args.redis_url else "memory",
        "runs": [
            {
                "workers": m.workers,
                "load_average": m.load_average,
                "rows": [
                    {
                        "name": row.name,
                        "median": {
                            route: [asdict(row.median(route, c)) for c in sorted(by_c)]
                            for route, by_c in row.runs.items()
                        },
                    }
                    for row in m.rows
                ],
            }
            for m in all_measured
        ],
        "summary": summary,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.results}")


# ---- main ------------------------------------------------------------------------------------


async def recreate_database(url: str) -> None:
    """Drop and create the bench database (PostgreSQL), so every run starts empty."""
    from sqlalchemy.engine import make_url

    from billing.stores import plain_postgres_dsn

    target = make_url(url)
    if not (target.database or "").startswith("sg_bench"):
        raise SystemExit("--fresh-database only drops databases named sg_bench*")
    admin = await asyncpg.connect(plain_postgres_dsn(str(target.set(database="postgres"))))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{target.database}"')
    finally:
        await admin.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="per server")
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument(
        "--gateways", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
        help="gateway rows: auth only, +limits, +metering, full (all three)",
    )  # fmt: skip
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per row (median reported)")
    parser.add_argument("--redis-url", help="limiter store (default: in-process memory)")
    parser.add_argument(
        "--database-url", help="an empty database to migrate and use (default: a SQLite file)"
    )
    parser.add_argument(
        "--fresh-database", action="store_true", help="drop and create --database-url first"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    if args.fresh_database and args.database_url:
        asyncio.run(recreate_database(args.database_url))
    meters: list[CpuMeter] = []
    if args.database_url:
        meters.append(PostgresCpu(args.database_url))
    if args.redis_url:
        meters.append(RedisCpu(args.redis_url))
    measured = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        setup = GatewaySetup(tmp, "", database_url=args.database_url)
        for workers in args.workers:
            measured.append(run_workers(workers, args, setup, tmp, tuple(meters)))
    report(measured, args)


if __name__ == "__main__":
    main()
