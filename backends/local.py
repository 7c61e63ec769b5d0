"""`LocalBackend`: an inference engine in this process, behind the backend contract."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from backends.base import BackendError, BackendEvent, BackendRequest, FinalUsage
from core.errors import BackendUnavailable, InvalidRequest, SluicegateError
from inference.protocol import InferenceEngine


class LocalBackend:
    """An engine in this process. Closing the event stream aborts the engine request."""

    def __init__(self, engine: InferenceEngine, *, name: str = "local", max_outstanding: int = 256):
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


def open_engine(model: str, *, engine: str = "torch", options: dict[str, Any]) -> InferenceEngine:
    """An engine for a checkpoint (`tiny`, a directory or a hub id); imports torch/vLLM lazily."""
    if engine == "torch":
        from inference.engine.async_engine import TorchAsyncEngine

        # TorchAsyncEngine's concrete Tokenizer is a superset of the protocol's.
        return cast(InferenceEngine, TorchAsyncEngine.from_model(model, **options))
    if engine == "vllm":
        from inference.vllm_engine import VllmAsyncEngine, VllmEngineOptions

        return cast(InferenceEngine, VllmAsyncEngine(model, VllmEngineOptions.of(options)))
    raise ValueError(f"engine must be torch or vllm, not {engine!r}")
