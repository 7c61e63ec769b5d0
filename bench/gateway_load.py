"""What `bench/gateway.py` drives and reads: uvicorn servers, wrk runs and CPU meters.

CPU time per request is read from /proc before and after each wrk run, separately for the
server under test (all its processes), for the PostgreSQL processes serving the bench
database (plus the cluster's background writers, which every database shares), and for
Redis (its own `INFO cpu`). Each meter sees only its own processes, so a stage's cost shows
where it is paid: a cheaper gateway that moves work into the database is not a win.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import redis
from sqlalchemy.engine import make_url

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
# PostgreSQL's own processes, shared by every database of the cluster (`ps` titles).
PG_BACKGROUND = (
    "checkpointer", "background writer", "walwriter", "autovacuum", "wal writer",
    "logical replication", "archiver", "stats collector", "wal summarizer",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads); 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


class CpuMeter(Protocol):
    name: str

    def read(self) -> Mapping[int, float] | float:
        """CPU seconds so far: per process (pids come and go) or one total."""
        ...


def cpu_delta(before: Mapping[int, float] | float, after: Mapping[int, float] | float) -> float:
    """Seconds used between two reads; a process that appeared meanwhile counts whole."""
    if isinstance(before, float) and isinstance(after, float):
        return after - before
    assert isinstance(before, Mapping) and isinstance(after, Mapping)
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


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

    def read(self) -> dict[int, float]:
        return {pid: process_cpu_seconds(pid) for pid in self.pids()}


class PostgresCpu:
    """The backends of one local database, plus the cluster's background processes."""

    name = "postgres"

    def __init__(self, database_url: str) -> None:
        self.database = make_url(database_url).database or ""

    def read(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if title.startswith("postgres:") and self._ours(title):
                found[int(entry.name)] = process_cpu_seconds(int(entry.name))
        return found

    def _ours(self, title: str) -> bool:
        # "postgres: 15/main: postgres sg_bench 127.0.0.1(40962) idle" or "…: walwriter"
        words = title.split()
        return self.database in words or any(name in title for name in PG_BACKGROUND)


class RedisCpu:
    """The Redis server's own count (`INFO cpu`: its whole process, every client's work)."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def read(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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


# Each request's body differs (a counter where `COUNTER` stands in the body): nothing a
# server could cache for a repeated prompt (the gateway caches system prompts only) helps.
COUNTER = "#COUNTER#"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(auth)s
local head, tail, counter = [[%(head)s]], [[%(tail)s]], 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, head .. counter .. tail)
end
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
    # CPU milliseconds per request: "gateway" (the server under test), "postgres", "redis".
    cpu_ms: dict[str, float]


@dataclass(frozen=True)
class Target:
    """One wrk target: a server's route, with the body and key to send."""

    server: Server
    path: str
    body: Mapping[str, object]
    key: str | None


def run_wrk(
    target: Target, connections: int, duration: int, tmp: Path, meters: tuple[CpuMeter, ...]
) -> Load:
    auth = f'wrk.headers["Authorization"] = "Bearer {target.key}"' if target.key else ""
    script = tmp / "post.lua"
    head, _, tail = json.dumps(target.body).partition(COUNTER)
    script.write_text(WRK_SCRIPT % {"head": head, "tail": tail, "auth": auth})
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script)]
    everyone = (target.server, *meters)
    before = [meter.read() for meter in everyone]
    output = subprocess.run(
        [*command, target.server.url + target.path], capture_output=True, text=True, check=True
    ).stdout
    after = [meter.read() for meter in everyone]
    line = next(x for x in output.splitlines() if x.startswith("JSON "))
    stats = json.loads(line[5:])
    n = max(stats["requests"], 1)
    names = ["gateway", *(meter.name for meter in meters)]
    return Load(
        connections=connections,
        requests_per_s=stats["requests"] / (stats["duration_us"] / 1e6),
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        errors=stats["errors"] + stats["non2xx"],
        cpu_ms={
            name: round(cpu_delta(b, a) * 1000 / n, 4)
            for name, b, a in zip(names, before, after, strict=True)
        },
    )
