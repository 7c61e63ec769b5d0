"""LLMEngine: requests in, deltas out, one step at a time (schedule -> run -> postprocess)."""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from core.errors import ContextLengthExceeded, GenerationFailed
from inference.checkpoints.loader import DTYPES, load_checkpoint
from inference.engine.completion import Completion
from inference.engine.kv_cache import BlockManager
from inference.engine.model_runner import ModelRunner, StepResult
from inference.engine.scheduler import ScheduledSeq, Scheduler, SchedulerOutput
from inference.engine.sequence import Sequence, SequenceGroup
from inference.models import native
from inference.models.gpt2 import GPT2
from inference.models.llama import Llama
from inference.models.native_llama import NativeLlama
from inference.outputs import EngineStats, GenerationDelta
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_KV_CACHE_BYTES = 1 << 30
# What a failing model step raises (torch reports kernel and shape errors as RuntimeError).
STEP_ERRORS = (RuntimeError, ValueError, IndexError, OverflowError)
ATTENTION_CHOICES = ("auto", "native", "torch")


class RequestTooLong(ContextLengthExceeded, ValueError):
    """Prompt plus `max_tokens` exceed the model's context (a `ValueError` for engine users)."""


@dataclass
class EngineOptions:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    block_size: int = 16
    num_kv_blocks: int | None = None  # wins over kv_cache_memory_bytes
    kv_cache_memory_bytes: int | None = None  # default: 1 GiB, capped at what can be used
    enable_prefix_caching: bool = True
    dtype: str = "float32"  # float32 | bfloat16
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    num_threads: int | None = None  # torch intra-op threads; default: torch's choice
    # Decode attention: "native" (the C kernel), "torch" (gather + SDPA), or "auto" (native
    # where it can be built, else torch).
    attention: str = "auto"
    # A Llama-family model's whole step: "native" (llama_forward.c), "torch" (the torch model,
    # with `attention` as above), or "auto" (native where the kernels build and the model is
    # Llama-family, else torch). GPT-2 always runs on torch.
    forward: str = "auto"

    def __post_init__(self) -> None:
        positive = ("max_num_seqs", "max_num_batched_tokens", "block_size")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        for name in ("num_kv_blocks", "kv_cache_memory_bytes", "max_model_len", "num_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}")
        if self.forward not in ATTENTION_CHOICES:
            raise ValueError(f"forward must be one of {', '.join(ATTENTION_CHOICES)}")


class LLMEngine:
    def __init__(self, checkpoint: Path, options: EngineOptions | None = None):
        self.options = options = options or EngineOptions()
        if options.num_threads is not None:
            torch.set_num_threads(options.num_threads)
        dtype = DTYPES[options.dtype]
        self.model: GPT2 | Llama | NativeLlama
        started = time.perf_counter()
        loaded = load_checkpoint(checkpoint, dtype)
        self.model, self.config = loaded.model, loaded.config
        self.tokenizer: Tokenizer | None = loaded.tokenizer
        del loaded  # the native forward may replace the torch model: let its weights go then
        limit = self.config.max_position_embeddings
        if options.max_model_len is not None and options.max_model_len > limit:
            raise ValueError(f"max_model_len must be at most {limit} for this model")
        self.max_model_len = options.max_model_len or limit
        self.block_manager = BlockManager(
            self._num_blocks(dtype),
            options.block_size,
            enable_prefix_caching=options.enable_prefix_caching,
        )
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs=options.max_num_seqs,
            max_num_batched_tokens=options.max_num_batched_tokens,
        )
        kernel = _attention_kernel(options.attention)
        model = self._native_model(kernel) or self.model
        self.runner = ModelRunner(
            model,
            self.config,
            self.block_manager,
            dtype=dtype,
            max_model_len=self.max_model_len,
            kernel=kernel,
        )
        self._log_loaded(checkpoint.name, time.perf_counter() - started, dtype)
        self.eos_token_ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            self.eos_token_ids |= self.tokenizer.eos_token_ids
        self._groups: dict[str, SequenceGroup] = {}
        self._completions: dict[int, Completion] = {}
        self._next_seq_id = 0
        self._arrivals = 0
        # Requests a step failure ended since the last `take_failed()`, with the error.
        self._failed: dict[str, GenerationFailed] = {}
        self.tokens_generated = 0
        self.prompt_tokens_processed = 0
        self.num_steps = 0

    def _log_loaded(self, name: str, seconds: float, dtype: torch.dtype) -> None:
        kv_bytes = ModelRunner.kv_bytes_per_block(self.config, self.options.block_size, dtype)
        log.info(
            "%s: loaded in %.1f s (%s forward, %s attention, %s, KV cache %d MiB)",
            name,
            seconds,
            "C" if isinstance(self.runner.model, NativeLlama) else "torch",
            "C" if self.runner.kernel is not None else "torch",
            self.options.dtype,
            kv_bytes * self.block_manager.num_blocks >> 20,
        )

    def warm_up(self, new_tokens: int = 2) -> float:
        """Run one short request (prefill and decode) so the first real one does not pay for
        first calls (thread pools, allocations); return its seconds. Counters start at zero
        again, and the prompt is shorter than a block, so nothing stays in the prefix cache."""
        started = time.perf_counter()
        prompt = list(range(max(1, min(8, self.options.block_size - 1))))
        params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        self.add_request("warm-up", prompt, params)
        while self.has_unfinished():
            self.step()
        for failure in self.take_failed().values():
            raise failure
        self.tokens_generated = self.prompt_tokens_processed = self.num_steps = 0
        self.block_manager.queried_tokens = self.block_manager.hit_tokens = 0
        return time.perf_counter() - started

    def _native_model(self, kernel: ctypes.CDLL | None) -> NativeLlama | None:
        """The C forward of a Llama-family model, if the `forward` option asks for it."""
        choice = self.options.forward
        if choice == "torch" or not isinstance(self.model, Llama):
            if choice == "native":
                raise ValueError("forward 'native' covers Llama-family models only")
            return None
        library = kernel if kernel is not None else native.load()
        if library is None:
            if choice == "native":
                raise ValueError("forward 'native' needs a working C compiler (see the log)")
            return None
        model = NativeLlama(self.model, library, max_positions=self.max_model_len)
        self.model = model  # the torch weights are not needed any more
        return model

    def _num_blocks(self, dtype: torch.dtype) -> int:
        o = self.options
        if o.num_kv_blocks is not None:
            return o.num_kv_blocks
        per_block = ModelRunner.kv_bytes_per_block(self.config, o.block_size, dtype)
        budget = (o.kv_cache_memory_bytes or DEFAULT_KV_CACHE_BYTES) // per_block
        if budget < 1:
            raise ValueError(f"kv_cache_memory_bytes must hold at least one block ({per_block})")
        if o.kv_cache_memory_bytes is not None:
            return budget
        usable = o.max_num_seqs * -(-self.max_model_len // o.block_size)
        return min(budget, usable)

    # -- requests --------------------------------------------------------------------------

    def validate_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise `ValueError` naming the bad field; safe to call from any thread."""
        params.validate()  # again: params are a plain dataclass, changeable since they were built
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids must not be empty")
        vocab = self.config.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in prompt_token_ids):
            raise ValueError(f"prompt_token_ids must be token ids in [0, {vocab})")
        if len(prompt_token_ids) >= self.max_model_len:
            raise RequestTooLong(
                f"prompt is {len(prompt_token_ids)} tokens; max_model_len is {self.max_model_len}",
                param="prompt",
            )
        if len(prompt_token_ids) + params.max_tokens > self.max_model_len:
            raise RequestTooLong(
                f"max_tokens: prompt ({len(prompt_token_ids)}) + max_tokens "
                f"({params.max_tokens}) exceeds max_model_len {self.max_model_len}",
                param="max_tokens",
            )
        needed = self.block_manager.blocks_for(len(prompt_token_ids) + params.max_tokens)
        if needed > self.block_manager.num_blocks:
            raise ValueError("max_tokens: prompt + max_tokens do not fit the KV cache")
        if params.n > self.options.max_num_seqs:
            raise ValueError(f"n must be at most max_num_seqs ({self.options.max_num_seqs})")
        if any(t >= vocab for t in params.logit_bias):
            raise ValueError(f"logit_bias keys must be token ids below {vocab}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a checkpoint with a tokenizer")

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        tenant: str | None = None,
        priority: int = 0,
        prompt: str | None = None,
    ) -> None:
        if request_id in self._groups:
            raise ValueError(f"request_id {request_id!r} is already running")
        self.validate_request(prompt_token_ids, params)
        group = SequenceGroup.create(
            request_id,
            prompt_token_ids,
            params,
            first_seq_id=self._next_seq_id,
            arrival=self._arrivals,
            tenant=tenant,
            priority=priority,
            prompt=prompt,
        )
        self._next_seq_id += params.n
        self._arrivals += 1
        for seq in group.seqs:
            self._completions[seq.seq_id] = Completion(seq, self.tokenizer, self.eos_token_ids)
        self.scheduler.add(group)
        self._groups[request_id] = group

    def abort(self, request_id: str) -> None:
        """Drop the request; its blocks are free when this returns. Unknown ids are ignored."""
        group = self._groups.pop(request_id, None)
        if group is None:
            return
        self.scheduler.abort(group)
        self._release(group)

    def abort_all(self) -> None:
        for request_id in list(self._groups):
            self.abort(request_id)

    def has_unfinished(self) -> bool:
        return bool(self._groups)

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_blocks_used=self.block_manager.num_used_blocks,
            kv_blocks_free=self.block_manager.num_free_blocks,
            prefix_cache_hit_rate=self.block_manager.prefix_cache_hit_rate,
            tokens_generated=self.tokens_generated,
            prompt_tokens_processed=self.prompt_tokens_processed,
        )

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> list[GenerationDelta]:
        output = self.scheduler.schedule()
        if output.is_empty:
            return []
        try:
            result = self.runner.execute(output)
        except STEP_ERRORS as error:
            log.warning("engine step failed (%s); isolating the request that caused it", error)
            output, result = self._without_culprits(output)
        self.scheduler.update(output)
        return self._postprocess(output, result)

    def take_failed(self) -> dict[str, GenerationFailed]:
        """Requests that failed in a step since the last call (they are gone from the engine)."""
        failed, self._failed = self._failed, {}
        return failed

    def _without_culprits(self, output: SchedulerOutput) -> tuple[SchedulerOutput, StepResult]:
        """Re-run a failed step's requests in halves until each part runs or is one request.

        A request that still fails alone is ended (`take_failed`); everyone else's tokens
        come from the parts that ran, so nobody else loses or repeats a token. A failed
        attempt may have written keys and values, but only at the positions a later
        attempt writes again (or of a request that is dropped). Costs about 2 x log2(batch)
        extra model calls per culprit, and only when a step fails.
        """
        by_group: dict[int, list[ScheduledSeq]] = {}
        for item in output.scheduled:
            by_group.setdefault(id(item.seq.group), []).append(item)
        kept: list[ScheduledSeq] = []
        merged = StepResult([], {})
        parts = _halves(list(by_group.values()))
        while parts:
            part = parts.pop()
            items = [item for group_items in part for item in group_items]
            try:
                result = self.runner.execute(SchedulerOutput(items, []))
            except STEP_ERRORS as error:
                if len(part) == 1:
                    self._fail(items[0].seq.group, error)
                else:
                    parts.extend(_halves(part))
                continue
            kept += items
            merged.sampled += result.sampled
            merged.prompt_logprobs.update(result.prompt_logprobs)
        return SchedulerOutput(kept, output.preempted), merged

    def _fail(self, group: SequenceGroup, error: BaseException) -> None:
        log.error("request %s fails the engine step; ending it", group.request_id, exc_info=error)
        self._failed[group.request_id] = GenerationFailed(
            "The model failed while generating this request; other requests were not affected."
        )
        self.abort(group.request_id)

    def _postprocess(self, output: SchedulerOutput, result: StepResult) -> list[GenerationDelta]:
        self.num_steps += 1
        for item in output.scheduled:
            seq = item.seq
            self.prompt_tokens_processed += max(
                0, min(item.start + item.num_tokens, seq.num_prompt_tokens) - item.start
            )
            if item.forks:  # before the leader can finish and free the prompt's blocks
                self.scheduler.fork(seq, item.forks)
        for seq_id, (first, logprobs) in result.prompt_logprobs.items():
            self._completions[seq_id].add_prompt_logprobs(first, logprobs)
        deltas = []
        for sampled in result.sampled:
            seq = sampled.seq
            seq.token_ids.append(sampled.token_id)
            self.tokens_generated += 1
            deltas.append(self._completions[seq.seq_id].advance(sampled, self.max_model_len))
            if seq.finish_reason is not None:
                self._finish(seq)
        return deltas

    def _finish(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.runner.release(seq.seq_id)
        self._completions.pop(seq.seq_id, None)
        group = seq.group
        if group.finished:
            self._groups.pop(group.request_id, None)

    def _release(self, group: SequenceGroup) -> None:
        for seq in group.seqs:
            self.runner.release(seq.seq_id)
            self._completions.pop(seq.seq_id, None)


def _halves(parts: list[list[ScheduledSeq]]) -> list[list[list[ScheduledSeq]]]:
    middle = (len(parts) + 1) // 2
    return [parts[:middle], parts[middle:]] if len(parts) > 1 else [parts]


def _attention_kernel(choice: str) -> ctypes.CDLL | None:
    """The C decode-attention kernel if `choice` (an `attention` option) asks for it."""
    if choice == "torch":
        return None
    kernel = native.load()
    if kernel is None and choice == "native":
        raise ValueError("attention 'native' needs a working C compiler (see the log)")
    return kernel


def engine_options(options: dict[str, Any]) -> EngineOptions:
    """`EngineOptions` from keyword arguments; an unknown name is a `ValueError` naming it."""
    known = {f.name for f in fields(EngineOptions)}
    for name in options:
        if name not in known:
            raise ValueError(f"{name} is not an engine option (known: {', '.join(sorted(known))})")
    return EngineOptions(**options)
