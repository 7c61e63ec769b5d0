"""Sampling parameters of one request, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        _check(self.n >= 1, "n", "must be at least 1")
        _check(self.max_tokens >= 1, "max_tokens", "must be at least 1")
        _check(0.0 <= self.temperature <= 2.0, "temperature", "must be between 0 and 2")
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(self.top_k >= -1, "top_k", "must be -1, 0 (disabled) or a positive integer")
        _check(self.seed is None or -(2**63) <= self.seed < 2**63, "seed", "must fit in 64 bits")
        _check(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be between -2 and 2")
        _check(
            -2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be between -2 and 2"
        )
        for token, bias in self.logit_bias.items():
            _check(isinstance(token, int) and token >= 0, "logit_bias", "keys must be token ids")
            _check(-100.0 <= bias <= 100.0, "logit_bias", "values must be between -100 and 100")
        _check(
            all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings"
        )
        _check(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids", "must be token ids")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _check(value is None or 0 <= value <= 20, name, "must be between 0 and 20")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name} {message}")
