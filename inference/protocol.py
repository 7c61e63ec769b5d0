"""The one small async interface both engines (ours and vLLM) implement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from inference.outputs import EngineStats, GenerationDelta
from inference.params import SamplingParams


class TextTokenizer(Protocol):
    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...


class InferenceEngine(Protocol):
    """An engine that runs many requests at once, stepping off the event loop."""

    model_name: str
    max_model_len: int
    tokenizer: TextTokenizer

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        tenant: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[GenerationDelta]:
        """Deltas of all `params.n` completions, interleaved; ends when all have finished.

        Waiting requests are served by `priority` (lower first, vLLM's convention), then
        round-robin across `tenant`s. Closing or cancelling the iterator aborts the request.
        Bad input raises `ValueError` (a prompt too long for the model raises
        `core.errors.ContextLengthExceeded`, which is also a `ValueError`).
        """
        ...

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...
