"""Where our engine's step time goes, measured during a bench run.

The C forward's own per-phase clock (thread 0's view, waits included; see
`NativeLlama.profile`), and around it, the time in the forward call, in the logits
(final norm + head of the sampled rows) and everything else of a step (scheduling, batch
building, sampling, detokenizing), summed over the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from inference.engine.llm_engine import LLMEngine
from inference.models.native_llama import PHASES, NativeLlama


class _Timed:
    """Stands in for the runner's model: the same calls, timed."""

    def __init__(self, model: Any):
        self.model = model
        self.forward_s = 0.0
        self.logits_s = 0.0
        self.steps = 0

    def __call__(self, *args: Any) -> Tensor:
        start = time.perf_counter()
        hidden: Tensor = self.model(*args)
        self.forward_s += time.perf_counter() - start
        self.steps += 1
        return hidden

    def compute_logits(self, hidden: Tensor) -> Tensor:
        start = time.perf_counter()
        logits: Tensor = self.model.compute_logits(hidden)
        self.logits_s += time.perf_counter() - start
        return logits


class Profile:
    def __init__(self, timed: _Timed, phases: Tensor | None):
        self.timed, self.phases = timed, phases

    def summary(self, wall_s: float) -> dict[str, Any]:
        t = self.timed
        result: dict[str, Any] = {
            "steps": t.steps,
            "wall_s": round(wall_s, 3),
            "forward_s": round(t.forward_s, 3),
            "logits_s": round(t.logits_s, 3),
            "rest_of_step_s": round(wall_s - t.forward_s - t.logits_s, 3),
        }
        if self.phases is not None:
            seconds = (self.phases.double() / 1e9).tolist()
            result["forward_phases_s"] = {
                n: round(s, 3) for n, s in zip(PHASES, seconds, strict=True)
            }
        return result


@contextmanager
def profiled(engine: LLMEngine) -> Iterator[Profile]:
    runner = engine.runner
    model = runner.model
    phases = None
    if isinstance(model, NativeLlama):
        phases = model.profile = torch.zeros(len(PHASES), dtype=torch.long)
    timed = _Timed(model)
    runner.model = timed  # type: ignore[assignment]
    try:
        yield Profile(timed, phases)
    finally:
        runner.model = model
        if isinstance(model, NativeLlama):
            model.profile = None
