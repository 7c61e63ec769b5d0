"""Backends: where a model's tokens come from, normalised to one stream of events.

A backend takes a tokenized request and yields `GenerationDelta`s (the engine contract)
followed by one `FinalUsage`. `LocalBackend` wraps an in-process `AsyncEngine`;
`RemoteBackend` (`inference/client.py`) speaks OpenAI-compatible HTTP + SSE to our
`inference.server` or a stock `vllm serve`, always with token-id prompts, so both ends
count the same tokens.

Failures surface as `BackendError` (the router may retry elsewhere) or, for a request the
backend itself refuses as invalid, as `core.errors.InvalidRequest` (retrying cannot help).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, cast

from core.errors import BackendUnavailable, InvalidRequest, SluicegateError
from inference.outputs import GenerationDelta
from inference.params import SamplingParams
from inference.protocol import AsyncEngine


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


class LocalBackend:
    """An engine in this process. Closing the event stream aborts the engine request."""

    def __init__(self, engine: AsyncEngine, *, name: str = "local", max_outstanding: int = 256):
        self.engine = engine
        self.name = name
        self.max_outstanding = max_outstanding

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.shutdown()

    async def check_health(self) -> bool:
        # The torch engine exposes whether its stepping thread is alive.
        return bool(getattr(self.engine, "running", True))

    async def generate(self, request: BackendRequest) -> AsyncGenerator[BackendEvent, None]:
        completion_tokens: dict[int, int] = {}
        prompt_tokens = len(request.prompt_token_ids)
        cached = 0
        generated: dict[int, int] = {}
        counting = (
            {"generated": generated} if getattr(self.engine, "reports_generated", False) else {}
        )
        stream = self.engine.generate(
            request.request_id,
            request.prompt_token_ids,
            request.params,
            tenant=request.tenant,
            **counting,  # type: ignore[arg-type]
        )
        try:
            async with aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    completion_tokens[delta.index] = delta.completion_tokens
                    prompt_tokens, cached = delta.prompt_tokens, delta.cached_tokens
                    yield delta
        except BackendUnavailable as exc:  # the engine stopped: another backend may serve
            raise BackendError(f"{self.name}: {exc}") from exc
        except SluicegateError:
            raise
        except ValueError as exc:  # the engine's validation names the field first
            message = str(exc)
            raise InvalidRequest(message, param=message.split(" ", 1)[0].rstrip(":")) from exc
        finally:
            if counting:
                request.engine_completion_tokens = sum(generated.values())
        yield FinalUsage(prompt_tokens, sum(completion_tokens.values()), cached)


def open_engine(model: str, *, engine: str = "torch", options: dict[str, Any]) -> AsyncEngine:
    """An engine for a checkpoint (`tiny`, a directory or a hub id); imports torch/vLLM lazily."""
    if engine == "torch":
        from inference.async_engine import TorchAsyncEngine

        # TorchAsyncEngine's concrete Tokenizer is a superset of the protocol's.
        return cast(AsyncEngine, TorchAsyncEngine.from_model(model, **options))
    if engine == "vllm":
        from inference.vllm_engine import VllmAsyncEngine, VllmEngineOptions

        try:
            vllm_options = VllmEngineOptions(**options)
        except TypeError as exc:
            raise ValueError(f"bad vLLM engine option: {exc}") from exc
        return cast(AsyncEngine, VllmAsyncEngine(model, vllm_options))
    raise ValueError(f"engine must be torch or vllm, not {engine!r}")
