"""What the gateway costs per request, against a mock backend and a bare pass-through.

    apt-get install -y wrk            # the load generator (`make bench-gateway` does this)
    python -m bench.gateway [--workers 1] [--duration 10] [--redis-url redis://...]

Rows, each server under test with the same number of uvicorn worker processes:
  (a) mock         a tiny FastAPI app returning a fixed completion, called directly;
  (b) gateway      our app in front of that mock (a remote backend), auth on; rate limits
                   and metering switched on and off so their cost shows side by side;
  (c) passthrough  a minimal FastAPI app forwarding the request to the mock with the same
                   HTTP client use (aiohttp's pooled session) and no checks: the
                   ceiling of a Python gateway here.
wrk measures requests/s at 64 connections and p50/p99 latency at 1 and 64 connections;
CPU milliseconds per request of the server under test come from /proc/<pid>/stat (all of
its worker processes). Writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "gateway.json"
BODY = {"model": "tiny", "prompt": "Hello, world. Tell me a story.", "max_tokens": 16}
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]


# ---- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        """The uvicorn process and its worker children."""
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
        return total / CLK_TCK


@contextmanager
def serve(
    name: str, factory: str, workers: int, env: dict[str, str], health: str
) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    server = Server(name, f"http://127.0.0.1:{port}", process)
    try:
        _wait_ready(server, health)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        try:
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not start")


# ---- load ----------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
%(auth)s
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"errors\\": %%d, \\"non2xx\\": %%d, " ..
    "\\"p50_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Load:
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float


def run_wrk(server: Server, key: str | None, connections: int, duration: int, tmp: Path) -> Load:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script = tmp / f"post-{connections}.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(BODY), "auth": auth})
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script)]
    cpu_before = server.cpu_seconds()
    output = subprocess.run(
        [*command, f"{server.url}/v1/completions"], capture_output=True, text=True, check=True
    ).stdout
    cpu = server.cpu_seconds() - cpu_before
    line = next(x for x in output.splitlines() if x.startswith("JSON "))
    stats = json.loads(line[5:])
    n = max(stats["requests"], 1)
    return Load(
        connections=connections,
        requests_per_s=stats["requests"] / (stats["duration_us"] / 1e6),
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        errors=stats["errors"] + stats["non2xx"],
        cpu_ms_per_request=cpu * 1000 / n,
    )


@dataclass
class Row:
    name: str
    server: Server
    key: str | None
    runs: dict[int, list[Load]] = field(default_factory=dict)

    @property
    def loads(self) -> dict[int, Load]:
        """Per concurrency, the run with the median throughput."""
        return {
            c: sorted(r, key=lambda x: x.requests_per_s)[len(r) // 2] for c, r in self.runs.items()
        }


def measure_all(rows: list[Row], args: argparse.Namespace, tmp: Path, console: Console) -> None:
    """Interleaved rounds: a slow spell on this (shared) machine hits every row alike."""
    for row in rows:  # warm-up: connection pools, caches, the tokenizer
        run_wrk(row.server, row.key, 8, 2, tmp)
    for round_ in range(args.rounds):
        for row in rows:
            for connections in (1, 64):
                load = run_wrk(row.server, row.key, connections, args.duration, tmp)
                row.runs.setdefault(connections, []).append(load)
        console.print(f"round {round_ + 1}/{args.rounds} done")


# ---- the gateway: one database and developer key, several switch settings ------------------


@dataclass
class GatewaySetup:
    directory: Path
    mock_url: str
    admin_key: str = field(default_factory=lambda: "sk-admin-" + secrets.token_urlsafe(32))
    key: str | None = None
    database_url: str | None = None  # None: a SQLite file in `directory`

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.directory / 'bench.db'}"

    def env(self, *, limits: bool, metering: bool, redis_url: str | None) -> dict[str, str]:
        from core.config import Settings

        env = {
            "DATABASE_URL": self.db_url,
            "SLUICEGATE_CONFIG": str(self.directory / "models.yaml"),
            "SLUICEGATE_ADMIN_KEY": self.admin_key,
            "SLUICEGATE_ENVIRONMENT": "development",
            "SLUICEGATE_VAR_DIR": str(self.directory / "var"),
            "SLUICEGATE_METERING_ENABLED": str(metering).lower(),
            "SLUICEGATE_WAITLIST_PER_IP_PER_MINUTE": "0",
            "SLUICEGATE_LOG_LEVEL": "warning",
            "REDIS_URL": redis_url or "",
        }
        if "limits_enabled" in Settings.model_fields:
            env["SLUICEGATE_LIMITS_ENABLED"] = str(limits).lower()
        return env

    def write_config(self) -> None:
        from inference.checkpoints.hub import resolve_model_dir
        from migrations.runner import upgrade

        backend = {"type": "remote", "base_url": self.mock_url, "max_outstanding": 4096}
        model = {"id": "tiny", "tokenizer": str(resolve_model_dir("tiny")), "backends": [backend]}
        config = {"router": {"health_interval_s": 5}, "models": [model]}
        (self.directory / "models.yaml").write_text(yaml.safe_dump(config))
        upgrade(self.db_url)

    def onboard(self, url: str) -> str:
        """A developer on an effectively unlimited tier (limits then cost, never refuse)."""
        if self.key is not None:
            return self.key
        admin = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=url, timeout=60) as http:
            huge = 10**12
            # requests_per_minute is a 32-bit column: PostgreSQL refuses 10**12 there.
            tier = {"name": "bench", "requests_per_minute": 2**31 - 1, "tokens_per_minute": huge,
                    "max_concurrent_requests": 100_000, "tokens_per_month": huge}  # fmt: skip
            http.post("/admin/tiers", json=tier, headers=admin).raise_for_status()
            applied = http.post(
                "/v1/waitlist",
                json={"email": "bench@example.com", "name": "Bench", "use_case": "Benchmarks."},
            )
            applied.raise_for_status()
            app_id, claim = applied.json()["id"], applied.json()["claim_token"]
            http.post(
                f"/admin/waitlist/{app_id}/approve", json={"tier": "bench"}, headers=admin
            ).raise_for_status()
            claimed = http.post(
                f"/v1/waitlist/{app_id}/claim", headers={"Authorization": f"Bearer {claim}"}
            )
            claimed.raise_for_status()
        self.key = str(claimed.json()["key"])
        return self.key


def gateway_variants() -> list[tuple[str, bool, bool]]:
    from core.config import Settings

    if "limits_enabled" in Settings.model_fields:
        return [
            ("(b) gateway: auth", False, False),
            ("(b) gateway: auth+limits", True, False),
            ("(b) gateway: auth+metering", False, True),
            ("(b) gateway: auth+limits+metering", True, True),
        ]
    # Rate limits cannot be switched off yet: every gateway row includes them.
    return [
        ("(b) gateway: auth+limits", True, False),
        ("(b) gateway: auth+limits+metering", True, True),
    ]


# ---- report ----------------------------------------------------------------------------------


def table(rows: list[Row], workers: int) -> Table:
    out = Table(title=f"Gateway overhead (uvicorn workers per server: {workers}; load: wrk)")
    for column in (
        "row",
        "req/s @64",
        "p50 @1",
        "p99 @1",
        "p50 @64",
        "p99 @64",
        "CPU ms/req",
        "errors",
    ):
        out.add_column(column, justify="left" if column == "row" else "right")
    for row in rows:
        one, many = row.loads[1], row.loads[64]
        out.add_row(
            row.name,
            f"{many.requests_per_s:,.0f}",
            f"{one.p50_ms:.2f} ms",
            f"{one.p99_ms:.2f} ms",
            f"{many.p50_ms:.2f} ms",
            f"{many.p99_ms:.2f} ms",
            f"{many.cpu_ms_per_request:.2f}",
            str(one.errors + many.errors),
        )
    return out


def verdicts(rows: list[Row]) -> dict[str, Any]:
    mock, passthrough, gateway = rows[0], rows[1], rows[2]  # rows[2]: the leanest gateway
    ratio = gateway.loads[64].requests_per_s / passthrough.loads[64].requests_per_s
    added = gateway.loads[1].p50_ms - mock.loads[1].p50_ms
    return {
        "row": gateway.name,
        "throughput_vs_passthrough": round(ratio, 3),
        "throughput_target_met": ratio >= 0.6,
        "p50_c1_added_ms": round(added, 3),
        "latency_target_met": added <= 1.0,
        # The HTTP hop alone (pass-through minus mock) and what the gateway adds on top of it.
        "p50_c1_hop_ms": round(passthrough.loads[1].p50_ms - mock.loads[1].p50_ms, 3),
        "p50_c1_pipeline_ms": round(gateway.loads[1].p50_ms - passthrough.loads[1].p50_ms, 3),
        "cpu_ms_per_request_pipeline": round(
            gateway.loads[64].cpu_ms_per_request - passthrough.loads[64].cpu_ms_per_request, 3
        ),
        **limits_cost(rows),
    }


def limits_cost(rows: list[Row]) -> dict[str, Any]:
    """What switching rate limits on costs, same run: the target is <= 20% of requests/s."""
    by_name = {row.name: row for row in rows}
    off, on = by_name.get("(b) gateway: auth"), by_name.get("(b) gateway: auth+limits")
    if off is None or on is None:
        return {}
    cost = 1 - on.loads[64].requests_per_s / off.loads[64].requests_per_s
    return {
        "limits_cost_of_requests_per_s": round(cost, 3),
        "limits_target_met": cost <= 0.2,
        "limits_cpu_ms_per_request": round(
            on.loads[64].cpu_ms_per_request - off.loads[64].cpu_ms_per_request, 3
        ),
        "limits_p50_c1_added_ms": round(on.loads[1].p50_ms - off.loads[1].p50_ms, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per row (median reported)")
    parser.add_argument("--redis-url", help="limiter store (default: in-process memory)")
    parser.add_argument(
        "--database-url", help="an empty database to migrate and use (default: a SQLite file)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        rows = start_servers(stack, args, tmp)
        measure_all(rows, args, tmp, console)
    console.print(table(rows, args.workers))
    summary = verdicts(rows)
    console.print(summary)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.database_url else "sqlite",
        "limiter_store": "redis" if args.redis_url else "memory",
        "rows": [{"name": r.name, "median": [asdict(x) for x in r.loads.values()]} for r in rows],
        "summary": summary,
    }
    args.results.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.results}")


def start_servers(stack: ExitStack, args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Every server under test, all up at once (idle ones cost nothing)."""
    workers = args.workers
    mock = stack.enter_context(
        serve("mock", "bench.gateway_servers:mock_app", workers, {}, "/health")
    )
    env = {"BENCH_MOCK_URL": mock.url}
    passthrough = stack.enter_context(
        serve("passthrough", "bench.gateway_servers:passthrough_app", workers, env, "/health")
    )
    rows = [Row("(a) mock", mock, None), Row("(c) passthrough", passthrough, None)]
    setup = GatewaySetup(tmp, mock.url, database_url=args.database_url)
    setup.write_config()
    for name, limits, metering in gateway_variants():
        env = setup.env(limits=limits, metering=metering, redis_url=args.redis_url)
        gateway = stack.enter_context(serve(name, "api.app:create_app", workers, env, "/healthz"))
        rows.append(Row(name, gateway, setup.onboard(gateway.url)))
    return rows


if __name__ == "__main__":
    main()
