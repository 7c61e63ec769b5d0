"""vLLM's outputs as ours: `RequestOutput`s become `GenerationDelta`s, stats become ours.

`DeltaMapper` turns one request's stream of `vllm.RequestOutput`s (DELTA kind) into our
deltas: token ids, text, logprobs (vLLM gives the chosen token plus the top k), running
completion counts, finish reasons. Where vLLM's text differs from what our engine would
give for the same tokens, ours is made: at the end of a completion whose last tokens leave a
character unfinished, vLLM drops the dangling bytes and our engine writes U+FFFD for them.
`StatsSink` is what vLLM's stat loggers record, summed over data-parallel engines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import BackendUnavailable
from inference.outputs import EngineStats, FinishReason, GenerationDelta, TokenLogprob
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer

# vLLM's finish reasons; "abort" and "error" are handled apart, "repetition" is a stop.
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "repetition": "stop",
}


class DeltaMapper:
    """Turns one request's stream of vLLM `RequestOutput`s into our deltas."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        tokenizer: Tokenizer,
    ):
        self._request_id = request_id
        self._prompt = prompt_token_ids
        self._params = params
        self._tokenizer = tokenizer
        self._completion_tokens = [0] * params.n
        self._token_ids: list[list[int]] = [[] for _ in range(params.n)]
        self._texts: list[list[str]] = [[] for _ in range(params.n)]
        self._prompt_logprobs_sent = False

    def deltas(self, output: Any) -> list[GenerationDelta]:
        prompt_logprobs = None
        top_k = self._params.prompt_logprobs
        if top_k is not None and not self._prompt_logprobs_sent and output.prompt_logprobs:
            prompt_logprobs = _prompt_logprobs(self._prompt, output.prompt_logprobs, top_k)
            self._prompt_logprobs_sent = True
        result = []
        for completion in output.outputs:
            if completion.finish_reason == "abort":
                continue  # aborted elsewhere: the stream ends without a finish reason
            if completion.finish_reason == "error":
                raise BackendUnavailable(f"vLLM failed request {self._request_id}")
            index, token_ids = completion.index, list(completion.token_ids)
            self._completion_tokens[index] += len(token_ids)
            self._token_ids[index] += token_ids
            finish = _FINISH_REASONS.get(completion.finish_reason or "")
            text = completion.text
            if finish is not None and not isinstance(completion.stop_reason, str):
                self._texts[index].append(text)
                text += self._unfinished_character(index, completion.stop_reason)
            elif text:
                self._texts[index].append(text)
            if not token_ids and not text and finish is None and not prompt_logprobs:
                continue
            result.append(
                GenerationDelta(
                    request_id=self._request_id,
                    index=index,
                    token_ids=token_ids,
                    text=text,
                    logprobs=self._logprobs(token_ids, completion.logprobs),
                    finish_reason=finish,
                    prompt_tokens=len(self._prompt),
                    completion_tokens=self._completion_tokens[index],
                    cached_tokens=output.num_cached_tokens or 0,
                    cumulative_logprob=completion.cumulative_logprob or 0.0,
                    prompt_logprobs=prompt_logprobs,
                )
            )
            prompt_logprobs = None
        return result

    def _unfinished_character(self, index: int, stop_token: int | None) -> str:
        """U+FFFD for bytes the last tokens left unfinished, as our engine ends such a text.

        Only at the end of a completion that did not stop on a stop string (the text then
        ends before it). EOS and stop tokens have no text, in both engines."""
        ended = self._tokenizer.eos_token_ids | {stop_token}
        whole = self._tokenizer.decode([t for t in self._token_ids[index] if t not in ended])
        sent = "".join(self._texts[index])
        tail = whole[len(sent) :]
        return tail if whole.startswith(sent) and tail and not tail.strip("\ufffd") else ""

    def _logprobs(self, token_ids: list[int], positions: Any) -> list[TokenLogprob] | None:
        if self._params.logprobs is None or positions is None:
            return None
        top_k = self._params.logprobs
        return [_token_logprob(t, p, top_k) for t, p in zip(token_ids, positions, strict=True)]


def _token_logprob(token_id: int, position: Mapping[int, Any], top_k: int) -> TokenLogprob:
    """vLLM gives the chosen token plus the top `k` (k + 1 entries when it is not among them)."""
    chosen = position.get(token_id)
    ranked = sorted(position.items(), key=lambda item: -item[1].logprob)[:top_k]
    return TokenLogprob(
        token_id=token_id,
        logprob=float(chosen.logprob) if chosen is not None else -math.inf,
        top={alternative: float(entry.logprob) for alternative, entry in ranked},
    )


def _prompt_logprobs(
    prompt: Sequence[int], positions: Sequence[Mapping[int, Any] | None], top_k: int
) -> list[TokenLogprob | None]:
    return [
        None if position is None else _token_logprob(token, position, top_k)
        for token, position in zip(prompt, positions, strict=False)
    ]


@dataclass
class StatsSink:
    """What vLLM's stat loggers see, summed over data-parallel engines."""

    usage: dict[int, float] = field(default_factory=dict)  # engine -> KV usage fraction
    engines: set[int] = field(default_factory=set)
    total_blocks: int = 0  # vLLM sums the KV blocks of all data-parallel engines
    running: dict[int, int] = field(default_factory=dict)
    waiting: dict[int, int] = field(default_factory=dict)
    prefix_queries: int = 0
    prefix_hits: int = 0
    tokens_generated: int = 0
    prompt_tokens: int = 0

    def record(self, engine: int, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.running[engine] = scheduler_stats.num_running_reqs
            self.waiting[engine] = scheduler_stats.num_waiting_reqs
            self.usage[engine] = scheduler_stats.kv_cache_usage
            self.prefix_queries += scheduler_stats.prefix_cache_stats.queries
            self.prefix_hits += scheduler_stats.prefix_cache_stats.hits
        if iteration_stats is not None:
            self.tokens_generated += iteration_stats.num_generation_tokens
            self.prompt_tokens += iteration_stats.num_prompt_tokens

    def snapshot(self) -> EngineStats:
        per_engine = self.total_blocks / max(len(self.engines), 1)
        used = round(sum(self.usage.values()) * per_engine)
        return EngineStats(
            running=sum(self.running.values()),
            waiting=sum(self.waiting.values()),
            kv_blocks_used=used,
            kv_blocks_free=self.total_blocks - used,
            prefix_cache_hit_rate=self.prefix_hits / self.prefix_queries
            if self.prefix_queries
            else 0.0,
            tokens_generated=self.tokens_generated,
            prompt_tokens_processed=self.prompt_tokens,
        )

    def logger_factory(self, base: type) -> Callable[[Any, int], Any]:
        """A per-engine `StatLoggerFactory` whose loggers write into this sink."""
        sink = self

        class _Recorder(base):  # vLLM's own base class, so its interface is checked
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self._config = vllm_config
                self._engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                sink.record(engine_idx, scheduler_stats, iteration_stats)

            def log_engine_initialized(self) -> None:
                # Known only once vLLM has profiled memory and sized the KV cache.
                sink.engines.add(self._engine_index)
                sink.total_blocks = int(self._config.cache_config.num_gpu_blocks or 0)

        return _Recorder
