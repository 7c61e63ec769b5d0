"""`python -m api.inference_server` as a real subprocess for tests (start, wait, kill, restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120.0
API_KEY = "upstream-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One inference server on the tiny model; `url` stays the same across restarts."""

    def __init__(
        self,
        model_dir: Path,
        log_dir: Path,
        *,
        name: str,
        port: int | None = None,
        served_name: str | None = "tiny",
    ):
        self.model_dir = model_dir
        self.served_name = served_name
        self.log_path = log_dir / f"{name}.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "api.inference_server",
            "--model",
            str(self.model_dir),
            *(["--served-model-name", self.served_name] if self.served_name else []),
            "--port",
            str(self.port),
            "--api-key",
            API_KEY,
            "--num-kv-blocks",
            "512",
            "--max-num-seqs",
            "16",
            "--num-threads",
            "1",
        ]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as a crashed machine would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def stats(self) -> dict[str, int]:
        response = httpx.get(f"{self.url}/stats", timeout=5)
        response.raise_for_status()
        data: dict[str, int] = response.json()
        return data
