"""`TokensPrompt` (raw prompt) and `tokens_input` (rendered engine input), as in `vllm.inputs`."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]
    prompt: NotRequired[str]


class TokensInput(TypedDict):
    type: Literal["token"]
    prompt_token_ids: list[int]
    prompt: NotRequired[str]
    arrival_time: NotRequired[float]
    cache_salt: NotRequired[str]


def tokens_input(
    prompt_token_ids: list[int], *, prompt: str | None = None, cache_salt: str | None = None
) -> TokensInput:
    inputs = TokensInput(type="token", prompt_token_ids=prompt_token_ids)
    if prompt is not None:
        inputs["prompt"] = prompt
    if cache_salt is not None:
        inputs["cache_salt"] = cache_salt
    return inputs


__all__ = ["TokensInput", "TokensPrompt", "tokens_input"]
