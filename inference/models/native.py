"""The C kernels, one library built on first use and called via ctypes.

`paged_attention.c` (decode attention for the torch models), `gemm.c` (the packed-weight
matmul) and `llama_forward.c` (a Llama-family step, see `native_llama.py`). Built with the
system C compiler (`$CC`, else `cc`) for this CPU (`-march=native`), once per sources, flags
and CPU: the library is cached under `$SLUICEGATE_KERNEL_CACHE` (default
`~/.cache/sluicegate/kernels`); `$SLUICEGATE_KERNEL_CFLAGS` adds flags (e.g. `-mno-avx512f`
to profile under valgrind, which does not decode AVX-512). It links `libgomp.so.1`, the OpenMP
runtime torch has already loaded, so the kernels and torch share one thread pool. Without a
compiler, or if the build fails, `load()` returns None and the engine stays on the pure-torch
path (logged once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
SOURCES = tuple(_HERE / name for name in ("paged_attention.c", "gemm.c", "llama_forward.c"))
HEADERS = (_HERE / "kernels.h",)
# gnu11: the vector extensions (kernels.h) are GNU C, accepted by GCC and Clang alike.
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")


def _cpu_signature() -> str:
    """What `-march=native` compiles for: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features")
    lines = [line for line in info.splitlines() if line.split(":")[0].strip() in wanted]
    return "\n".join(sorted(set(lines)))


def _cache_dir() -> Path:
    configured = os.environ.get("SLUICEGATE_KERNEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sluicegate" / "kernels"


def _flags() -> list[str]:
    return [*FLAGS, *shlex.split(os.environ.get("SLUICEGATE_KERNEL_CFLAGS", ""))]


def _build(compiler: str) -> Path:
    sources = [path.read_bytes() for path in (*SOURCES, *HEADERS)]
    flags = _flags()
    parts = [*sources, " ".join(flags).encode(), compiler.encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]
    target = _cache_dir() / f"sluicegate-kernels-{key}.so"
    if target.exists():
        log.info("C kernels: %s (built before)", target)
        return target
    log.info("C kernels: building %s for this CPU (once; later starts reuse it)", target.name)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename: concurrent builders never load a partial file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run(
            [compiler, *flags, *map(str, SOURCES), "-o", str(built), "-lm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(built, target)
    log.info("C kernels: built in %.1f s", time.perf_counter() - started)
    return target


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernel library, or None (with the reason logged) where it cannot be built."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.warning("no C compiler found: decode attention uses the (slower) torch path")
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except subprocess.CalledProcessError as exc:
        log.warning("building the C kernels failed, using the torch path:\n%s", exc.stderr)
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot build or load the C kernels, using the torch path: %s", exc)
        return None
    function = library.paged_decode_attention
    function.restype = ctypes.c_int
    pointers, sizes = [ctypes.c_void_p] * 6, [ctypes.c_int64] * 6
    function.argtypes = [*pointers, *sizes, ctypes.c_float, ctypes.c_int, ctypes.c_int]
    return library


def decode_attention(
    library: ctypes.CDLL,
    q: Tensor,
    cache: tuple[Tensor, Tensor],
    block_tables: Tensor,
    context_lens: Tensor,
    out: Tensor,
    *,
    block_size: int,
) -> None:
    """out[s] = attention of q[s] over its context in the pool.

    All tensors contiguous; the pools float32 or bfloat16, q and out either, matching them
    (bfloat16 queries and outputs go through a float32 copy, a few KB per step).
    """
    k_pool, v_pool = cache
    if k_pool.dtype not in (torch.float32, torch.bfloat16) or v_pool.dtype != k_pool.dtype:
        raise TypeError(f"the kernel reads float32 or bfloat16 pools, not {k_pool.dtype}")
    target = out
    if q.dtype != torch.float32:
        q, out = q.float(), torch.empty(out.shape, dtype=torch.float32)
    num_seqs, num_heads, head_dim = q.shape
    for tensor in (q, k_pool, v_pool, block_tables, context_lens, out):
        assert tensor.is_contiguous(), "the kernel reads raw memory: contiguous tensors only"
    status = library.paged_decode_attention(
        q.data_ptr(),
        k_pool.data_ptr(),
        v_pool.data_ptr(),
        block_tables.data_ptr(),
        context_lens.data_ptr(),
        out.data_ptr(),
        num_seqs,
        block_tables.shape[1],
        num_heads,
        k_pool.shape[1],
        head_dim,
        block_size,
        head_dim**-0.5,
        torch.get_num_threads(),
        k_pool.dtype == torch.bfloat16,
    )
    if status != 0:
        raise MemoryError("paged_decode_attention could not allocate its score buffer")
    if target is not out:
        target.copy_(out)
