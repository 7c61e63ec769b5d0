"""Where one gateway worker spends its time under load: a py-spy profile of the hot path.

    python -m bench.gateway_profile [--gateway full] [--route chat] [--workers 1] [--pin]
        [--redis-url redis://...] [--database-url postgresql://.../sg_bench --fresh-database]

Starts the instant upstream and one gateway variant (`bench/gateway_setup.py`: auth, limits,
metering or full), drives it with wrk at `--connections`, and samples one worker with
py-spy (`py-spy record --format raw`) while it does. Prints the functions with the most
samples, on their own (self) and with what they call (inclusive), and the worker's user
and system CPU per request; writes bench/results/gateway_profile.json.

py-spy samples wall time of a thread that is not idle: on a shared machine a worker that is
preempted inside a socket write is counted in that write. `--pin` puts the worker alone on
CPU 0 and everything else it talks to (upstream, wrk, PostgreSQL, Redis) on CPU 1 for the
run (their affinities are restored after), so the samples are the worker's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.gateway import ROUTES, recreate_database
from bench.gateway_load import Load, Server, Target, run_wrk, serve
from bench.gateway_setup import VARIANTS, GatewaySetup

RESULTS = Path(__file__).parent / "results" / "gateway_profile.json"
# In the project's venv (a dev dependency), which need not be on PATH.
PY_SPY = Path(sys.executable).with_name("py-spy")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def frame_name(frame: str) -> str:
    """`Job.complete (api/generation/job.py:212)` -> `Job.complete (job.py)`."""
    function, _, where = frame.partition(" (")
    return f"{function} ({Path(where.split(':')[0]).name})" if where else function


def aggregate(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's raw (collapsed) stacks -> (samples, self samples, inclusive samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = [frame_name(f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    return total, own, inclusive


def cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def peer_pids(servers: list[Server]) -> list[int]:
    """PostgreSQL's and Redis's processes, the upstream's and this one (wrk is its child)."""
    pids = [os.getpid(), *(p for server in servers for p in server.pids())]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith((b"postgres", b"redis-server", b"/usr/lib/postgresql")):
                pids.append(int(entry.name))
    return pids


@contextmanager
def pinned(worker: int, others: list[int]) -> Iterator[None]:
    """The worker alone on CPU 0, the others on CPU 1; every affinity restored after."""
    saved: dict[int, set[int]] = {}
    for pid, cpus in [(worker, {0}), *((p, {1}) for p in others)]:
        for tid in threads(pid):
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cpus)
            except OSError:  # gone meanwhile
                continue
    try:
        yield
    finally:
        for tid, cpus in saved.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue


def profile(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        upstream = stack.enter_context(
            serve("upstream", "bench.gateway_servers:mock_app", 2, {}, "/health")
        )
        setup = GatewaySetup(tmp, upstream.url, database_url=args.database_url)
        setup.write_config()
        name, limits, metering = VARIANTS[args.gateway]
        env = setup.env(limits=limits, metering=metering, redis_url=args.redis_url)
        gateway = stack.enter_context(
            serve(name, "api.app:create_app", args.workers, env, "/healthz")
        )
        target = Target(gateway, *ROUTES[args.route], setup.onboard(gateway.url))
        run_wrk(target, 8, 2, tmp, ())  # warm-up
        worker = gateway.pids()[-1]
        if args.pin:
            stack.enter_context(pinned(worker, peer_pids([upstream])))
        return sample(args, tmp, target, worker) | {"gateway": name}


def sample(args: argparse.Namespace, tmp: Path, target: Target, worker: int) -> dict[str, Any]:
    raw = tmp / "profile.txt"
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "--pid", str(worker), "--duration", str(args.seconds - 2),
         "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    user0, system0 = cpu_ticks(worker)
    load: Load = run_wrk(target, args.connections, args.seconds, tmp, ())
    user1, system1 = cpu_ticks(worker)
    spy.wait()
    total, own, inclusive = aggregate(raw)
    # This worker served about 1/workers of the requests.
    requests = load.requests_per_s * args.seconds / args.workers
    return {
        "route": args.route,
        "workers": args.workers,
        "pinned": args.pin,
        "requests_per_s": round(load.requests_per_s),
        "worker_user_ms_per_request": round((user1 - user0) / TICKS_PER_S * 1000 / requests, 3),
        "worker_system_ms_per_request": round(
            (system1 - system0) / TICKS_PER_S * 1000 / requests, 3
        ),
        "samples": total,
        "self": [[name, n / total] for name, n in own.most_common(args.top)],
        "inclusive": [[name, n / total] for name, n in inclusive.most_common(args.top)],
    }


def report(result: dict[str, Any]) -> None:
    console = Console(width=140)
    console.print(
        f"{result['gateway']}, {result['route']}, {result['workers']} worker(s)"
        f"{', pinned' if result['pinned'] else ''}: {result['requests_per_s']:,} req/s; the "
        f"sampled worker: {result['worker_user_ms_per_request']} ms user + "
        f"{result['worker_system_ms_per_request']} ms system CPU per request; "
        f"{result['samples']} samples"
    )
    for kind in ("self", "inclusive"):
        table = Table(title=f"share of samples, {kind}")
        table.add_column("function")
        table.add_column("share", justify="right")
        for name, share in result[kind]:
            table.add_row(name, f"{share:.1%}")
        console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_profile", description=__doc__)
    parser.add_argument("--gateway", choices=list(VARIANTS), default="full")
    parser.add_argument("--route", choices=list(ROUTES), default="chat")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20, help="of load (py-spy: 2 fewer)")
    parser.add_argument("--pin", action="store_true", help="the worker alone on CPU 0")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis-url", help="limiter store (default: in-process memory)")
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    parser.add_argument("--fresh-database", action="store_true", help="drop and create it first")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy is not installed next to {sys.executable}: make install-dev")
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs two CPUs")
    if args.fresh_database and args.database_url:
        asyncio.run(recreate_database(args.database_url))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        result = profile(args, Path(tmp))
    report(result)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
