"""The backend contract: a tokenized request in, one stream of events out.

A backend takes a tokenized request and yields `GenerationDelta`s (the engine contract)
followed by one `FinalUsage`. `LocalBackend` (`backends/local.py`) wraps an in-process
`InferenceEngine`; `RemoteBackend` (`backends/remote.py`) speaks OpenAI-compatible HTTP + SSE to our
`api.inference_server` or a stock `vllm serve`, always with token-id prompts, so both ends
count the same tokens.

Failures surface as `BackendError` (the router may retry elsewhere) or, for a request the
backend itself refuses as invalid, as `core.errors.InvalidRequest` (retrying cannot help).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from inference.outputs import GenerationDelta
from inference.params import SamplingParams


@dataclass
class BackendRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    tenant: str | None = None
    # The prompt as the backend will decode it; a remote server echoes this text in front
    # of the first completion text when prompt logprobs are asked for, and we strip it.
    prompt_text: str | None = None
    served_by: str | None = None  # set by the router: the backend that ran it
    # What a local engine generated for this request, read by anyone or not; set when its
    # stream closes (metering bills it for interrupted requests). None: not reported.
    engine_completion_tokens: int | None = None


@dataclass
class FinalUsage:
    """Token counts of the whole request, from the engine (the last event of a stream)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


BackendEvent = GenerationDelta | FinalUsage


class BackendError(Exception):
    """The backend failed (unreachable, crashed, protocol error, 5xx)."""


class BackendBusy(BackendError):
    """The backend refused the request because it is at capacity (429/503)."""


class Backend(Protocol):
    name: str
    max_outstanding: int  # queue bound: the router sends no more than this at once

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check_health(self) -> bool: ...

    def generate(self, request: BackendRequest) -> AsyncGenerator[BackendEvent, None]: ...
