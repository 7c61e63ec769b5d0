"""From a validated OpenAI request to what the engine runs: tokens, sampling, renderer.

Everything here happens before admission, so a request that cannot run (unknown token,
prompt over the context) is refused without reserving any quota.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from api.generation.hooks import Endpoint
from api.generation.openai_render import (
    ChatRenderer,
    CompletionRenderer,
    Envelope,
    PromptInfo,
    TokenRendering,
)
from api.generation.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.generation.prompts import ChatPrompts
from backends.catalog import ModelEntry
from core.errors import ContextLengthExceeded, InvalidRequest
from inference.params import SamplingParams

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


@dataclass
class Plan:
    endpoint: Endpoint
    prompts: list[PromptInfo]
    params: SamplingParams
    max_tokens: int  # per completion, as the client asked (0 for echo-only)
    stream: bool
    include_usage: bool
    user: str | None
    renderer: CompletionRenderer | ChatRenderer


def _new_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(12).hex()}"


def plan_completion(entry: ModelEntry, body: CompletionRequest, *, max_logprobs: int) -> Plan:
    if body.logprobs is not None and body.logprobs > max_logprobs:
        raise InvalidRequest(
            f"Invalid value for 'logprobs': at most {max_logprobs}, got {body.logprobs}.",
            param="logprobs",
        )
    n = body.n or 1
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    echo = bool(body.echo)
    prompts = [_prompt(entry, p, echo) for p in body.prompts()]
    for prompt in prompts:
        _check_context(entry, len(prompt.token_ids), max_tokens, "prompt")
    # best_of ranks candidates by cumulative logprob, so they must be computed.
    logprobs = body.logprobs
    if logprobs is None and (body.best_of or n) > n:
        logprobs = 0
    prompt_logprobs = body.logprobs if echo and body.logprobs is not None else None
    params = sampling_params(
        body,
        n=body.best_of or n,
        max_tokens=max(max_tokens, 1),  # echo-only still runs one step; its token is dropped
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        vocab_size=entry.tokenizer.vocab_size,
    )
    tokens = TokenRendering(
        entry.token_text, entry.token_bytes, as_ids=bool(body.return_tokens_as_token_ids)
    )
    renderer = CompletionRenderer(
        Envelope(_new_id("cmpl"), entry.id),
        prompts,
        n=n,
        logprobs=body.logprobs,
        echo=echo,
        discard_output=max_tokens == 0,
        tokens=tokens,
        continuous_usage=_continuous_usage(body),
    )
    return _plan("completions", prompts, params, max_tokens, body, renderer)


def plan_chat(entry: ModelEntry, body: ChatCompletionRequest, prompts: ChatPrompts) -> Plan:
    """`prompts`: the model's chat template and system-prompt cache (`api.generation.prompts`)."""
    tokenizer = entry.tokenizer
    try:
        prompt = prompts.encode(body.message_dicts())
    except ValueError as exc:
        raise InvalidRequest(f"Invalid 'messages': {exc}", param="messages") from None
    prompt_len = len(prompt.token_ids)
    max_tokens = body.max_new_tokens()
    if max_tokens is None:  # chat default: whatever the context leaves
        max_tokens = max(entry.context_length - prompt_len, 1)
    _check_context(entry, prompt_len, max_tokens, "messages")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling_params(
        body,
        n=body.n or 1,
        max_tokens=max_tokens,
        logprobs=logprobs,
        prompt_logprobs=None,
        vocab_size=tokenizer.vocab_size,
    )
    tokens = TokenRendering(
        entry.token_text, entry.token_bytes, as_ids=bool(body.return_tokens_as_token_ids)
    )
    renderer = ChatRenderer(
        Envelope(_new_id("chatcmpl"), entry.id),
        top_logprobs=logprobs,
        tokens=tokens,
        continuous_usage=_continuous_usage(body),
    )
    return _plan("chat.completions", [prompt], params, max_tokens, body, renderer)


def _plan(
    endpoint: Literal["completions", "chat.completions"],
    prompts: list[PromptInfo],
    params: SamplingParams,
    max_tokens: int,
    body: SamplingFields,
    renderer: CompletionRenderer | ChatRenderer,
) -> Plan:
    return Plan(
        endpoint=endpoint,
        prompts=prompts,
        params=params,
        max_tokens=max_tokens,
        stream=bool(body.stream),
        include_usage=body.include_usage,
        user=body.user,
        renderer=renderer,
    )


def _continuous_usage(body: SamplingFields) -> bool:
    return bool(body.stream_options and body.stream_options.continuous_usage_stats)


def _prompt(entry: ModelEntry, prompt: str | list[int], echo: bool) -> PromptInfo:
    tokenizer = entry.tokenizer
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
        if not ids:
            # OpenAI treats an empty prompt as the start of a document.
            start = tokenizer.bos_token_id
            start = start if start is not None else tokenizer.eos_token_id
            if start is None:
                raise InvalidRequest("Invalid 'prompt': it is empty.", param="prompt")
            ids = [start]
        info = PromptInfo(ids, prompt)
    else:
        _check_token_ids(prompt, tokenizer.vocab_size, "prompt")
        info = PromptInfo(prompt)
        if echo:
            info.text = tokenizer.decode(prompt, skip_special_tokens=False)
    if echo:
        info.engine_text = tokenizer.decode(info.token_ids, skip_special_tokens=False)
    return info


def _check_token_ids(ids: Sequence[int], vocab_size: int, param: str) -> None:
    for token in ids:
        if token >= vocab_size:
            raise InvalidRequest(
                f"Invalid '{param}': token id {token} is outside this model's vocabulary "
                f"(0 to {vocab_size - 1}).",
                param=param,
            )


def _check_context(entry: ModelEntry, prompt_tokens: int, max_tokens: int, param: str) -> None:
    limit = entry.context_length
    if prompt_tokens + max_tokens > limit:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in your prompt; "
            f"{max_tokens} for the completion). Please reduce your prompt or completion length.",
            param=param,
        )


def sampling_params(
    body: SamplingFields,
    *,
    n: int,
    max_tokens: int,
    logprobs: int | None,
    prompt_logprobs: int | None,
    vocab_size: int,
) -> SamplingParams:
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    if top_p == 0.0:  # OpenAI accepts 0: only the most likely token survives, i.e. greedy
        temperature, top_p = 0.0, 1.0
    biases = body.logit_bias_ids()
    _check_token_ids(list(biases), vocab_size, "logit_bias")
    try:
        return SamplingParams(
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            # Above the vocabulary, top-k keeps every token: say so with the vocabulary's
            # size, so no backend (a remote vLLM) is sent a value past it.
            top_k=min(body.top_k, vocab_size) if body.top_k and body.top_k > 0 else 0,
            seed=body.seed,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            logit_bias=biases,
            stop=body.stop_list(),
            ignore_eos=bool(body.ignore_eos),
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )
    except ValueError as exc:  # SamplingParams names the field first in its message
        message = str(exc)
        raise InvalidRequest(
            f"Invalid request: {message}.", param=message.split(" ", 1)[0]
        ) from None
