"""Where one decode step of ours goes, on SmolLM2-135M (the `--peers` model), per part.

    python -m bench.engine_profile [--rows 1,32] [--steps 16] [--prompt 128] [--threads 2]
    SLUICEGATE_KERNEL_CFLAGS=-mno-avx512f valgrind --tool=callgrind --instr-atstart=no \
        python -m bench.engine_profile --callgrind --threads 1 ...

`--rows` requests (bench.engine's random prompts, cut to at most `--prompt` tokens) are
prefilled, then `--steps` decode steps (every row decoding, greedy) are measured, split into
the parts of `LLMEngine.step`: schedule, batch (building the flat batch: ids, positions,
slots, block tables), forward (the C forward with its phases, or the torch model), logits
(final norm and head of the sampled rows), sample, postprocess (scheduler update, sequences,
detokenizing), and the process's CPU time per step (all threads; waiting for a CPU is not in
it, spinning is). Wall time on a loaded machine is noisy; under callgrind (`--callgrind`)
instrumentation is switched on around the measured steps only, one dump per row count
(`callgrind_annotate callgrind.out.<pid>.<n>`), which counts instructions repeatably. Use one
thread there (spinning waits would be counted too), and kernels built without AVX-512, which
valgrind does not decode.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.engine import workload
from bench.peer_models import prepare
from inference.engine.llm_engine import EngineOptions, LLMEngine
from inference.models.native_llama import PHASES, NativeLlama
from inference.params import SamplingParams

PARTS = ("schedule", "batch", "forward", "logits", "sample", "postprocess")

_MARKS_C = """
#include <valgrind/callgrind.h>
void sg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void sg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); CALLGRIND_STOP_INSTRUMENTATION; }
"""


class Marks:
    """Callgrind's client requests (no-ops outside valgrind), from a library built here."""

    def __init__(self, directory: Path):
        source, library = directory / "marks.c", directory / "marks.so"
        source.write_text(_MARKS_C)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", str(source), "-o", str(library)],
                       check=True)  # fmt: skip
        self.library = ctypes.CDLL(str(library))
        self.library.sg_dump.argtypes = [ctypes.c_char_p]

    @contextmanager
    def counted(self, name: str) -> Iterator[None]:
        self.library.sg_start()
        try:
            yield
        finally:
            self.library.sg_dump(name.encode())


class Clock:
    """Seconds per part, summed over the measured steps."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.on = False

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return function(*args, **kwargs)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return timed


def instrument(engine: LLMEngine, clock: Clock) -> None:
    """Time the step's parts by wrapping the objects' methods (instance attributes)."""
    runner, scheduler = engine.runner, engine.scheduler
    model = runner.model
    scheduler.schedule = clock.wrap("schedule", scheduler.schedule)  # type: ignore[method-assign]
    runner._build = clock.wrap("batch", runner._build)  # type: ignore[method-assign]
    engine._postprocess = clock.wrap("postprocess", engine._postprocess)  # type: ignore[method-assign]
    forward = clock.wrap("forward", model.__call__)
    logits = clock.wrap("logits", model.compute_logits)

    class Timed:
        config = model.config

        def __call__(self, *args: Any) -> Any:
            return forward(*args)

        def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = logits(hidden)
            return result

    runner.model = Timed()  # type: ignore[assignment]
    runner._sample = clock.wrap("sample", runner._sample)  # type: ignore[method-assign]


def decoding(engine: LLMEngine, rows: int, prompt: int, steps: int) -> None:
    """`rows` requests added and prefilled: from here every step is `rows` decodes."""
    params = SamplingParams(temperature=0.0, max_tokens=steps + 8, ignore_eos=True)
    for i, ids in enumerate(workload(rows, engine.config.vocab_size, seed=rows)):
        engine.add_request(f"p{rows}-{i}", ids[:prompt], params)
    scheduler = engine.scheduler
    while len(scheduler.waiting) or any(s.num_uncomputed_tokens > 1 for s in scheduler.running):
        engine.step()


def profile(
    engine: LLMEngine, clock: Clock, rows: int, args: argparse.Namespace, marks: Marks | None
) -> dict[str, Any]:
    decoding(engine, rows, args.prompt, args.steps)
    clock.seconds = dict.fromkeys(PARTS, 0.0)
    clock.on = True
    native = engine.model if isinstance(engine.model, NativeLlama) else None
    if native is not None:
        native.profile = torch.zeros(len(PHASES), dtype=torch.long)
    start, cpu = time.perf_counter(), time.process_time()
    with marks.counted(f"rows{rows}") if marks is not None else nullcontext():
        for _ in range(args.steps):
            engine.step()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    clock.on = False
    engine.abort_all()
    per_step = {part: round(s / args.steps * 1000, 3) for part, s in clock.seconds.items()}
    per_step["sample"] = round(per_step["sample"] - per_step["logits"], 3)  # it calls logits
    other = wall / args.steps * 1000 - sum(per_step.values())
    phases = {}
    if native is not None and native.profile is not None:
        ns = native.profile.tolist()
        phases = {n: round(t / args.steps / 1e6, 3) for n, t in zip(PHASES, ns, strict=True)}
        native.profile = None
    return {"rows": rows, "step_ms": round(wall / args.steps * 1000, 3),
            "cpu_ms": round(cpu / args.steps * 1000, 3), "parts_ms": per_step,
            "unaccounted_ms": round(other, 3),
            "forward_phases_ms": phases}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,32")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forward", default="auto", choices=("auto", "native", "torch"))
    parser.add_argument("--callgrind", action="store_true", help="client requests around steps")
    args = parser.parse_args()
    counts = [int(r) for r in args.rows.split(",")]
    models = prepare()
    options = EngineOptions(
        max_num_seqs=max(counts), max_model_len=args.prompt + args.steps + 16,
        num_threads=args.threads, forward=args.forward, max_num_batched_tokens=2048,
    )  # fmt: skip
    engine = LLMEngine(models.hf_dir, options)
    engine.warm_up()
    clock = Clock()
    instrument(engine, clock)
    with tempfile.TemporaryDirectory() as tmp:
        marks = Marks(Path(tmp)) if args.callgrind else None
        for rows in counts:
            result = profile(engine, clock, rows, args, marks)
            print(result, flush=True)


if __name__ == "__main__":
    main()
