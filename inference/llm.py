"""The offline API, shaped like vLLM's: `LLM(model).generate(prompts, sampling_params)`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from inference.checkpoints.hub import resolve_model_dir
from inference.engine.llm_engine import LLMEngine, engine_options
from inference.outputs import CompletionOutput, GenerationDelta, RequestOutput
from inference.params import SamplingParams

Prompt = str | list[int]


class LLM:
    """Generate completions for a batch of prompts with the torch engine.

    `model` is a checkpoint directory, a `.gguf` file, `tiny` (the built-in model) or a Hugging
    Face Hub id
    (downloaded with `huggingface_hub`, see `inference.checkpoints.hub`). Keyword arguments are
    `EngineOptions` fields (`max_num_seqs`, `dtype`, `num_kv_blocks`, ...).
    """

    def __init__(self, model: str, **options: Any):
        self.engine = LLMEngine(resolve_model_dir(model), engine_options(options))
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """One `RequestOutput` per prompt, in the order given."""
        batch = self._prompts(prompts)
        params = self._params(sampling_params, len(batch))
        outputs: dict[str, RequestOutput] = {}
        try:
            for (text, token_ids), p in zip(batch, params, strict=True):
                request_id = f"llm-{next(self._ids)}"
                self.engine.add_request(request_id, token_ids, p, prompt=text)
                outputs[request_id] = RequestOutput(
                    request_id=request_id,
                    prompt=text,
                    prompt_token_ids=token_ids,
                    outputs=[CompletionOutput(i, "", [], None) for i in range(p.n)],
                    finished=False,
                )
            while self.engine.has_unfinished():
                for delta in self.engine.step():
                    _merge(outputs[delta.request_id], delta)
                for failure in self.engine.take_failed().values():
                    raise failure
        finally:  # an error (or Ctrl-C) must not leave requests holding blocks
            for request_id in outputs:
                self.engine.abort(request_id)
        for output in outputs.values():
            output.finished = True
        return list(outputs.values())

    def _prompts(self, prompts: Prompt | Sequence[Prompt]) -> list[tuple[str | None, list[int]]]:
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        batch: list[tuple[str | None, list[int]]] = []
        for prompt in prompts:
            if isinstance(prompt, str):
                if self.tokenizer is None:
                    raise ValueError("prompts must be token ids: this checkpoint has no tokenizer")
                batch.append((prompt, self.tokenizer.encode(prompt)))
            else:
                batch.append((None, list(prompt)))  # type: ignore[arg-type]
        return batch

    @staticmethod
    def _params(
        sampling_params: SamplingParams | Sequence[SamplingParams] | None, count: int
    ) -> list[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * count
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        if len(sampling_params) != count:
            raise ValueError("sampling_params must be one SamplingParams or one per prompt")
        return list(sampling_params)


def _merge(output: RequestOutput, delta: GenerationDelta) -> None:
    completion = output.outputs[delta.index]
    completion.text += delta.text
    completion.token_ids.extend(delta.token_ids)
    completion.finish_reason = delta.finish_reason
    completion.cumulative_logprob = delta.cumulative_logprob
    if delta.logprobs is not None:
        if completion.logprobs is None:
            completion.logprobs = []
        completion.logprobs.extend(delta.logprobs)
    if delta.prompt_logprobs is not None:
        output.prompt_logprobs = delta.prompt_logprobs
    output.num_cached_tokens = delta.cached_tokens
