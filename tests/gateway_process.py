"""`sluicegate serve` as a real process on a free port, for what only a real server shows
(sockets, signals, what reaches its log)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def sluicegate_serve(env: dict[str, str], log: Path) -> Iterator[Gateway]:
    """Start `sluicegate serve` with `env` added to this process's environment; stop it with
    SIGTERM (SIGKILL if it will not stop) unless the test already did."""
    port = free_port()
    command = [sys.executable, "-c", "from cli.main import main; main()", "serve"]
    command += ["--port", str(port)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not answers(gateway.url):
            assert process.poll() is None, gateway.output()
            assert time.monotonic() < deadline, "sluicegate serve did not start"
            time.sleep(0.1)
        yield gateway
    finally:
        stop_group(process, timeout_s=30)


def stop_group(process: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """SIGTERM to the process group, SIGKILL if it has not exited within `timeout_s`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)


def answers(url: str) -> bool:
    """`/healthz` at `url` answers 200."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
