"""Sampling parameters of one request, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.inputs import INT32_MAX, INT64_MAX


@dataclass
class SamplingParams:
    """How to sample a request's completions; mirrors vLLM's `SamplingParams` names.

    Bad values raise `ValueError` whose message starts with the field name.
    """

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 (or -1) disables top-k
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: no logprobs; k: chosen token plus top-k alternatives
    prompt_logprobs: int | None = None  # same, for the prompt tokens (OpenAI `echo` + logprobs)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first bad field.

        Run when built and again when a request enters an engine (a dataclass can be changed
        in between). Every integer fits the int32/int64 it becomes in a tensor or in vLLM,
        and every float is finite: one bad value must fail its own request, never the
        engine step it would share with other tenants.
        """
        _integer(self.n, "n", 1, INT32_MAX)
        _integer(self.max_tokens, "max_tokens", 1, INT32_MAX)
        _number(self.temperature, "temperature", 0.0, 2.0)
        _number(self.top_p, "top_p", 0.0, 1.0)
        _check(self.top_p > 0.0, "top_p", "must be in (0, 1]")
        _integer(self.top_k, "top_k", -1, INT32_MAX)  # -1 and 0 disable top-k
        if self.seed is not None:
            _integer(self.seed, "seed", -(2**63), INT64_MAX)
        _number(self.presence_penalty, "presence_penalty", -2.0, 2.0)
        _number(self.frequency_penalty, "frequency_penalty", -2.0, 2.0)
        for token, bias in self.logit_bias.items():
            _integer(token, "logit_bias", 0, INT32_MAX)
            _number(bias, "logit_bias", -100.0, 100.0)
        _check(
            all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings"
        )
        for token in self.stop_token_ids:
            _integer(token, "stop_token_ids", 0, INT32_MAX)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None:
                _integer(value, name, 0, 20)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name} {message}")


def _integer(value: object, name: str, low: int, high: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    _check(ok, name, f"must be an integer from {low} to {high}")


def _number(value: object, name: str, low: float, high: float) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )
    _check(ok, name, f"must be a number from {low:g} to {high:g}")
