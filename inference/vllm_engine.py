"""Our async engine interface over vLLM's `AsyncLLM` (the v1 engine): the multi-GPU path.

Written against vLLM 0.33 (`vllm.v1.engine.async_llm.AsyncLLM`). vLLM is an optional extra
(`pip install 'sluicegate[vllm]'`) and is imported only when an engine starts, so this module
imports fine without it.

What maps to what:
- engine options -> `vllm.AsyncEngineArgs` -> `AsyncLLM.from_engine_args`;
- our `SamplingParams` -> `vllm.SamplingParams(..., output_kind=RequestOutputKind.DELTA)`;
- prompts go in as token ids, so vLLM never re-tokenizes: as `vllm.inputs.tokens_input(ids)`,
  the rendered form 0.33 expects (it logs a deprecation for raw `TokensPrompt`s), falling
  back to `vllm.TokensPrompt` on versions without it;
- each `vllm.RequestOutput` -> one `GenerationDelta` per `CompletionOutput` in it;
- closing or cancelling our iterator -> `AsyncLLM.abort(request_id)`;
- `stats()` -> the `SchedulerStats`/`IterationStats` vLLM hands to a stat logger we register.

vLLM has no tenants: `tenant` is accepted and ignored. `priority` (lower runs first, as in
our scheduler) needs `scheduling_policy="priority"` in `extra_engine_args`.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from inference.checkpoints.hub import resolve_model_dir
from inference.outputs import EngineStats, FinishReason, GenerationDelta, TokenLogprob
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer

# vLLM's finish reasons; "abort" and "error" are handled apart, "repetition" is a stop.
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "repetition": "stop",
}


class VllmUnavailableError(RuntimeError):
    """vLLM is not installed, or the engine was used before `start()`."""


@dataclass
class VllmEngineOptions:
    """Engine arguments passed through to `vllm.AsyncEngineArgs` unchanged."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # "mp", "ray", ... (vLLM picks if None)
    enable_prefix_caching: bool | None = None  # None: vLLM's default (on)
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    extra_engine_args: Mapping[str, Any] = field(default_factory=dict)

    def engine_args(self, model: str, served_model_name: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": model,
            "served_model_name": served_model_name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "distributed_executor_backend": self.distributed_executor_backend,
            "enable_prefix_caching": self.enable_prefix_caching,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        return args | dict(self.extra_engine_args)


class VllmAsyncEngine:
    """`inference.protocol.InferenceEngine` implemented by vLLM."""

    def __init__(
        self,
        model: str,
        options: VllmEngineOptions | None = None,
        *,
        served_model_name: str | None = None,
    ) -> None:
        self.options = options or VllmEngineOptions()
        self._model_dir = resolve_model_dir(model)
        self.model_name = served_model_name or model
        self.tokenizer = Tokenizer.from_dir(self._model_dir)
        self.max_model_len = self.options.max_model_len or _context_length(self._model_dir)
        self._stats = _StatsSink()
        self._running: tuple[_Vllm, Any] | None = None  # vLLM's names and its AsyncLLM

    @property
    def engine(self) -> Any:
        """The underlying `vllm.v1.engine.async_llm.AsyncLLM` (after `start()`)."""
        return self._require()[1]

    async def start(self) -> None:
        if self._running is not None:
            return
        vllm = _import_vllm()
        args = vllm.AsyncEngineArgs(
            **self.options.engine_args(str(self._model_dir), self.model_name)
        )
        engine = vllm.AsyncLLM.from_engine_args(
            args, stat_loggers=[self._stats.logger_factory(vllm.StatLoggerBase)]
        )
        self._running = (vllm, engine)
        # vLLM may shrink the context to what fits in KV memory; report what it settled on.
        self.max_model_len = int(engine.model_config.max_model_len)

    async def shutdown(self) -> None:
        if self._running is not None:
            self._running[1].shutdown()
            self._running = None

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        tenant: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationDelta]:
        vllm, engine = self._require()
        prompt = vllm.token_prompt(list(prompt_token_ids))
        vllm_params = to_vllm_sampling_params(vllm, params)
        # vLLM refuses a non-zero priority unless priority scheduling is configured.
        extra = {"priority": priority} if priority else {}
        outputs = engine.generate(prompt, vllm_params, request_id, **extra)
        mapper = _DeltaMapper(request_id, list(prompt_token_ids), params)
        finished = False
        try:
            async for output in outputs:
                for delta in mapper.deltas(output):
                    yield delta
                finished = bool(output.finished)
        finally:
            if not finished:  # closed, cancelled or failed: free the request's KV blocks
                await outputs.aclose()
                await engine.abort(request_id)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    def stats(self) -> EngineStats:
        return self._stats.snapshot()

    def _require(self) -> tuple[_Vllm, Any]:
        if self._running is None:
            raise VllmUnavailableError("the vLLM engine is not started; await start() first")
        return self._running


def to_vllm_sampling_params(vllm: _Vllm, params: SamplingParams) -> Any:
    """Our validated `SamplingParams` as vLLM's, streaming deltas."""
    return vllm.SamplingParams(
        n=params.n,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logit_bias=dict(params.logit_bias) or None,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) or None,
        ignore_eos=params.ignore_eos,
        logprobs=params.logprobs,
        prompt_logprobs=params.prompt_logprobs,
        output_kind=vllm.RequestOutputKind.DELTA,
    )


class _DeltaMapper:
    """Turns one request's stream of vLLM `RequestOutput`s into our deltas."""

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams):
        self._request_id = request_id
        self._prompt = prompt_token_ids
        self._params = params
        self._completion_tokens = [0] * params.n
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
                raise VllmUnavailableError(f"vLLM failed request {self._request_id}")
            token_ids = list(completion.token_ids)
            self._completion_tokens[completion.index] += len(token_ids)
            finish = _FINISH_REASONS.get(completion.finish_reason or "")
            if not token_ids and not completion.text and finish is None and not prompt_logprobs:
                continue
            result.append(
                GenerationDelta(
                    request_id=self._request_id,
                    index=completion.index,
                    token_ids=token_ids,
                    text=completion.text,
                    logprobs=self._logprobs(token_ids, completion.logprobs),
                    finish_reason=finish,
                    prompt_tokens=len(self._prompt),
                    completion_tokens=self._completion_tokens[completion.index],
                    cached_tokens=output.num_cached_tokens or 0,
                    cumulative_logprob=completion.cumulative_logprob or 0.0,
                    prompt_logprobs=prompt_logprobs,
                )
            )
            prompt_logprobs = None
        return result

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
class _StatsSink:
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


@dataclass(frozen=True)
class _Vllm:
    """The few vLLM names we use, imported together."""

    AsyncEngineArgs: Any
    AsyncLLM: Any
    SamplingParams: Any
    RequestOutputKind: Any
    token_prompt: Callable[[list[int]], Any]
    StatLoggerBase: type


def _import_vllm() -> _Vllm:
    try:
        root = importlib.import_module("vllm")
        inputs = importlib.import_module("vllm.inputs")
        sampling: ModuleType = importlib.import_module("vllm.sampling_params")
        async_llm = importlib.import_module("vllm.v1.engine.async_llm")
        loggers = importlib.import_module("vllm.v1.metrics.loggers")
    except ImportError as exc:
        raise VllmUnavailableError(
            "vLLM is not installed; install the extra: pip install 'sluicegate[vllm]'"
        ) from exc
    return _Vllm(
        AsyncEngineArgs=root.AsyncEngineArgs,
        AsyncLLM=async_llm.AsyncLLM,
        SamplingParams=sampling.SamplingParams,
        RequestOutputKind=sampling.RequestOutputKind,
        token_prompt=getattr(inputs, "tokens_input", None) or _tokens_prompt(root.TokensPrompt),
        StatLoggerBase=loggers.StatLoggerBase,
    )


def _tokens_prompt(tokens_prompt: Any) -> Callable[[list[int]], Any]:
    return lambda token_ids: tokens_prompt(prompt_token_ids=token_ids)


def _context_length(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ValueError(f"{model_dir}/config.json names no context length")
