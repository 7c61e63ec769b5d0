"""`AsyncLLM` with vLLM 0.33's constructor, `from_engine_args`, `generate`, `abort`, `shutdown`.

Instead of a model it emits `fake_token(prompt, index, step)` for completion `index` at
`step`, one token per completion per engine step, honouring `max_tokens`, `stop`,
`stop_token_ids`, logprobs and `RequestOutputKind.DELTA` the way vLLM does. Test-only extras
(`engine_args`, `requests`, `aborted`, `shut_down`) record what the adapter asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any

from vllm.engine.arg_utils import FAKE_KV_BLOCKS, AsyncEngineArgs
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, SchedulerStats


def fake_token(prompt_token_ids: list[int], index: int, step: int) -> int:
    return (sum(prompt_token_ids) * 31 + index * 1009 + step * 7 + 3) % 1000 + 100


def fake_text(token_id: int) -> str:
    return f" t{token_id}"


@dataclass
class _Child:
    index: int
    text: str = ""
    token_count: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    cumulative_logprob: float = 0.0


@dataclass
class _Request:
    prompt_token_ids: list[int]
    params: SamplingParams
    children: list[_Child] = field(default_factory=list)
    aborted: bool = False
    started: bool = False


class AsyncLLM:
    def __init__(
        self,
        vllm_config: Any,
        executor_class: Any,
        log_stats: bool,
        usage_context: Any = None,
        mm_registry: Any = None,
        log_requests: bool = True,
        start_engine_loop: bool = True,
        stat_loggers: list[Any] | None = None,
        aggregate_engine_logging: bool = False,
        client_addresses: dict[str, Any] | None = None,
        client_count: int = 1,
        client_index: int = 0,
    ) -> None:
        self.vllm_config = vllm_config
        self.model_config = vllm_config.model_config
        self.log_stats = log_stats or bool(stat_loggers)
        ranks = range(vllm_config.parallel_config.data_parallel_size)
        # (engine index, logger); this fake runs every request on engine 0.
        self._loggers = [
            (rank, factory(vllm_config, rank)) for factory in stat_loggers or [] for rank in ranks
        ]
        for _, stat_logger in self._loggers:
            stat_logger.log_engine_initialized()
        self._active: dict[str, _Request] = {}
        self.engine_args: AsyncEngineArgs | None = None
        self.requests: dict[str, tuple[Any, SamplingParams]] = {}
        self.aborted: list[str] = []
        self.raw_prompts = 0
        self.shut_down = False

    @classmethod
    def from_engine_args(
        cls,
        engine_args: AsyncEngineArgs,
        start_engine_loop: bool = True,
        usage_context: Any = None,
        stat_loggers: list[Any] | None = None,
    ) -> AsyncLLM:
        vllm_config = engine_args.create_engine_config(usage_context)
        engine = cls(
            vllm_config=vllm_config,
            executor_class=None,
            log_requests=engine_args.enable_log_requests,
            log_stats=not engine_args.disable_log_stats,
            start_engine_loop=start_engine_loop,
            usage_context=usage_context,
            stat_loggers=stat_loggers,
        )
        engine.engine_args = engine_args
        return engine

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True

    async def generate(
        self,
        prompt: Any,
        sampling_params: SamplingParams,
        request_id: str,
        *,
        prompt_text: str | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        trace_headers: Any = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
        session_id: str | None = None,
        kv_hints: Any = None,
        reasoning_ended: bool | None = None,
        reasoning_parser_kwargs: dict[str, Any] | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        request = self._admit(prompt, sampling_params, request_id, priority)
        try:
            while True:
                await asyncio.sleep(0)  # one engine step
                output = self._step(request_id, request)
                yield output
                if output.finished:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id, internal=True)
            raise
        finally:
            self._active.pop(request_id, None)

    async def abort(self, request_id: str | Iterable[str], internal: bool = False) -> None:
        for one in (request_id,) if isinstance(request_id, str) else request_id:
            self.aborted.append(one)
            if one in self._active:
                self._active[one].aborted = True

    def _admit(
        self, prompt: Any, params: SamplingParams, request_id: str, priority: int
    ) -> _Request:
        if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
            raise TypeError("the fake accepts token prompts only")
        self.raw_prompts += "type" not in prompt  # vLLM 0.33 warns these are deprecated
        if priority != 0 and self.vllm_config.scheduler_config.policy != "priority":
            raise ValueError(f"Got priority {priority} but Priority scheduling is not enabled.")
        if params.output_kind != RequestOutputKind.DELTA:
            raise NotImplementedError("the fake streams RequestOutputKind.DELTA only")
        request = _Request(list(prompt["prompt_token_ids"]), params)
        request.children = [_Child(index) for index in range(params.n)]
        self.requests[request_id] = (prompt, params)
        self._active[request_id] = request
        return request

    def _step(self, request_id: str, request: _Request) -> RequestOutput:
        prompt_logprobs = None
        if not request.started and request.params.prompt_logprobs is not None:
            prompt_logprobs = [None] + [
                {token: Logprob(-3.0, rank=1)} for token in request.prompt_token_ids[1:]
            ]
        outputs = [
            self._advance(request, child)
            for child in request.children
            if child.finish_reason is None
        ]
        self._record(request, sum(len(out.token_ids) for out in outputs))
        request.started = True
        return RequestOutput(
            request_id=request_id,
            prompt=None,
            prompt_token_ids=request.prompt_token_ids,
            prompt_logprobs=prompt_logprobs,
            outputs=outputs,
            finished=all(child.finish_reason is not None for child in request.children),
            num_cached_tokens=0,
        )

    def _advance(self, request: _Request, child: _Child) -> CompletionOutput:
        params = request.params
        if request.aborted:
            child.finish_reason = "abort"
            return CompletionOutput(child.index, "", [], None, None, finish_reason="abort")
        token = fake_token(request.prompt_token_ids, child.index, child.token_count)
        child.token_count += 1
        chosen = -1.0 - 0.01 * child.token_count
        child.cumulative_logprob += chosen
        before = len(child.text)
        child.text += fake_text(token)
        for stop in params.stop or []:
            if (position := child.text.find(stop)) >= 0:
                child.text, child.finish_reason, child.stop_reason = (
                    child.text[:position],
                    "stop",
                    stop,
                )
                break
        if child.finish_reason is None and token in (params.stop_token_ids or []):
            child.finish_reason, child.stop_reason = "stop", token
        if child.finish_reason is None and child.token_count >= (params.max_tokens or 16):
            child.finish_reason = "length"
        return CompletionOutput(
            index=child.index,
            text=child.text[before:],
            token_ids=[token],
            cumulative_logprob=child.cumulative_logprob if params.logprobs is not None else None,
            logprobs=[_logprobs(token, chosen, params.logprobs)]
            if params.logprobs is not None
            else None,
            finish_reason=child.finish_reason,
            stop_reason=child.stop_reason,
        )

    def _record(self, request: _Request, new_tokens: int) -> None:
        iteration = IterationStats()
        iteration.num_generation_tokens = new_tokens
        prefix = PrefixCacheStats()
        if not request.started:
            iteration.num_prompt_tokens = len(request.prompt_token_ids)
            prefix = PrefixCacheStats(requests=1, queries=len(request.prompt_token_ids), hits=16)
        scheduler = SchedulerStats(
            num_running_reqs=len(self._active),
            num_waiting_reqs=0,
            kv_cache_usage=min(1.0, 4 * len(self._active) / FAKE_KV_BLOCKS),
            prefix_cache_stats=prefix,
        )
        for rank, stat_logger in self._loggers:
            if rank == 0:
                stat_logger.record(scheduler, iteration, engine_idx=rank)


def _logprobs(token: int, chosen: float, top_k: int) -> dict[int, Logprob]:
    """The chosen token ranks second; like vLLM, return the top `top_k` plus the chosen one."""
    ranking = [(token + 1, -0.5), (token, chosen)]
    ranking += [(token + 1 + j, -2.0 - 0.1 * j) for j in range(1, top_k)]
    result = {alt: Logprob(lp, rank=r + 1) for r, (alt, lp) in enumerate(ranking[:top_k])}
    result.setdefault(token, Logprob(chosen, rank=2))
    return result
