"""vLLM from this checkout: our inference server on it, or vLLM's own OpenAI server.

vLLM runs in an environment of its own (`make vllm` builds it, see `deploy/vllm-env.sh`),
so it is started as a subprocess of that environment's Python with this checkout on
`PYTHONPATH`. The vllm-marked tests and `bench/vllm_gateway.py` start servers this way; for
vLLM offline (`vllm.LLM`), run a script with `vllm_python()` and `vllm_environ()`.

    python = vllm_python()                      # None: not built here
    server = VllmServer(ours(model_dir, port=free_port(), enforce_eager=True), log_path)
    server.start(); server.wait_ready(); ...; server.stop()

On CPU, `vllm_environ` sizes the KV cache (`VLLM_CPU_KVCACHE_SPACE`, GiB) and binds OpenMP
threads (`VLLM_CPU_OMP_THREADS_BIND`): vLLM's "auto" gives a worker one thread on a
2-core machine, and refuses tensor parallelism with fewer NUMA nodes than workers, so a
list per worker is given (`0-1` for one worker, `0|1` for two).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ENV_DIR = Path.home() / ".cache" / "sluicegate" / "vllm-venv"
ENV_DIR_VARIABLE = "SLUICEGATE_VLLM_ENV"


def vllm_env_dir() -> Path:
    return Path(os.environ.get(ENV_DIR_VARIABLE) or DEFAULT_ENV_DIR)


def vllm_python() -> Path | None:
    """The vLLM environment's interpreter, if `make vllm` has built it."""
    python = vllm_env_dir() / "bin" / "python"
    return python if python.exists() else None


def cpu_binding(workers: int) -> str:
    """OpenMP cores per worker: all cores for one, one core each for several (`0|1`)."""
    cores = os.cpu_count() or 1
    if workers <= 1:
        return f"0-{cores - 1}"
    per = max(cores // workers, 1)
    return "|".join(f"{i * per}-{i * per + per - 1}" if per > 1 else str(i) for i in range(workers))


def vllm_environ(*, workers: int = 1, kv_cache_gib: float = 1.0) -> dict[str, str]:
    """The environment for a vLLM process: this checkout importable, nothing fetched."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_NO_USAGE_STATS": "1",  # vLLM reports usage to its authors unless told not to
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding(workers))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Launch:
    """What to start: the command (after the interpreter), its port and health path."""

    args: list[str]
    port: int
    workers: int  # engine worker processes (tensor x pipeline parallel)
    health_path: str


def ours(
    model: str | Path,
    *,
    port: int,
    served_model_name: str = "model",
    tensor_parallel_size: int = 1,
    api_key: str | None = None,
    options: Mapping[str, Any] | None = None,
    flags: Sequence[str] = (),
) -> Launch:
    """`python -m api.inference_server --engine vllm ...`; `options` become `--option K=V`."""
    args = ["-m", "api.inference_server", "--engine", "vllm", "--model", str(model)]
    args += ["--served-model-name", served_model_name, "--port", str(port)]
    args += ["--tensor-parallel-size", str(tensor_parallel_size), *flags]
    if api_key:
        args += ["--api-key", api_key]
    for key, value in (options or {}).items():
        args += ["--option", f"{key}={_yaml_scalar(value)}"]
    return Launch(args, port, tensor_parallel_size, "/health")


def theirs(
    model: str | Path,
    *,
    port: int,
    served_model_name: str = "model",
    tensor_parallel_size: int = 1,
    flags: Sequence[str] = (),
) -> Launch:
    """vLLM's own OpenAI server (`vllm serve` fails under the `vllm-cpu` distribution name)."""
    args = ["-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    args += ["--served-model-name", served_model_name, "--port", str(port), "--host", "127.0.0.1"]
    args += ["--tensor-parallel-size", str(tensor_parallel_size), *flags]
    return Launch(args, port, tensor_parallel_size, "/health")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class VllmServer:
    """One server process (its own process group, so vLLM's workers go with it)."""

    launch: Launch
    log_path: Path
    kv_cache_gib: float = 1.0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.launch.port}"

    def start(self) -> None:
        python = vllm_python()
        if python is None:
            raise FileNotFoundError(f"no vLLM environment at {vllm_env_dir()}: run `make vllm`")
        env = vllm_environ(workers=self.launch.workers, kv_cache_gib=self.kv_cache_gib)
        env.update(self.extra_env)
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(python), *self.launch.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 900.0) -> float:
        """Seconds from `start()` until the health check answered 200."""
        deadline = self.started_at + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + self.launch.health_path, timeout=2).status_code == 200:
                    self.ready_after_s = time.monotonic() - self.started_at
                    return self.ready_after_s
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"vLLM server not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the group (a clean shutdown), SIGKILL whatever is left after `grace_s`."""
        if self.process is None:
            return
        group = self.process.pid  # its own session: the group id is its pid
        with contextlib.suppress(ProcessLookupError):  # exited by itself
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):  # exited by itself
            os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, characters: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-characters:]
