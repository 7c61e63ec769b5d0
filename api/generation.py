"""The request pipeline behind /v1/completions and /v1/chat/completions.

resolve model -> tokenize -> context check -> admit -> record -> generate (router) ->
settle (exactly once, in a `finally`: also on errors and client disconnects).

Usage is what the engine counted, never an estimate. Routes call `GenerationService`;
`inference.server` uses the same service over a single in-process engine, so the gateway
and the inference server speak exactly the same wire format.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import Depends, Request
from starlette.responses import Response
from starlette.types import Receive

from api.errors import SERVER_ERROR, error_body
from api.hooks import (
    Admission,
    Admitter,
    Caller,
    Meter,
    NoMeter,
    Outcome,
    OutcomeStatus,
    Ticket,
    Unlimited,
)
from api.model_config import (
    Deployment,
    EngineFactory,
    GatewayConfig,
    ModelEntry,
    build_deployment,
    default_engine_factory,
    load_config,
)
from api.openai_render import DONE, sse, usage
from api.openai_schemas import (
    MAX_LOGPROBS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    RequestT,
    parse_body,
)
from api.planning import Plan, plan_chat, plan_completion
from api.settings import Settings
from api.streaming import ClientDisconnected, EventStreamResponse, merge, until_disconnect
from core.errors import BackendUnavailable, InvalidRequest, ModelNotFound, SluicegateError
from inference.backends import BackendError, BackendRequest, FinalUsage
from inference.outputs import GenerationDelta
from inference.router import Router

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    receive: Receive
    received_at: dt.datetime
    started: float  # time.perf_counter()

    @classmethod
    def of(cls, request: Request) -> RequestContext:
        request_id = getattr(request.state, "request_id", None) or f"req_{os.urandom(12).hex()}"
        return cls(request_id, request.receive, dt.datetime.now(dt.UTC), time.perf_counter())


async def read_body(request: Request, model: type[RequestT]) -> RequestT:
    """The JSON body as `model`; a non-JSON content type or bad JSON is a 400."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != JSON and not media.endswith("+json"):
            raise InvalidRequest(
                f"Unsupported Content-Type {media!r}: send the body as JSON with "
                "'Content-Type: application/json'."
            )
    return parse_body(model, await request.body())


class GenerationService:
    """Models, router and the admission/metering hooks; one per app.

    Built from a config, the backends (tokenizers, engines, router) are created and started
    on first use, so an app that never generates never loads a model; `start()` does it
    eagerly. Built from a `Deployment`, they are used as they are.
    """

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        deployment: Deployment | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        admitter: Admitter | None = None,
        meter: Meter | None = None,
        max_completion_logprobs: int = MAX_LOGPROBS,
    ):
        if (config is None) == (deployment is None):
            raise ValueError("give exactly one of config and deployment")
        self._config = config
        self._deployment = deployment
        self._engine_factory = engine_factory
        self._started = False
        self._lock = asyncio.Lock()
        self.admitter: Admitter = admitter or Unlimited()
        self.meter: Meter = meter or NoMeter()
        self.max_completion_logprobs = max_completion_logprobs
        self._sequence = itertools.count()
        if config is not None:
            self._cards = {m.id: _card(m.id, m.created, m.owned_by) for m in config.models}
        else:
            assert deployment is not None
            self._cards = {
                m.id: _card(m.id, m.created, m.owned_by) for m in deployment.models.values()
            }

    async def start(self) -> Deployment:
        """Build (if needed) and start the backends; idempotent."""
        if self._started and self._deployment is not None:
            return self._deployment
        async with self._lock:
            if self._deployment is None:
                assert self._config is not None
                # Loading tokenizers and weights blocks; keep the event loop serving.
                self._deployment = await asyncio.to_thread(
                    build_deployment, self._config, engine_factory=self._engine_factory
                )
            if not self._started:
                await self._deployment.router.start()
                self._started = True
        return self._deployment

    async def close(self) -> None:
        if self._deployment is not None and self._started:
            await self._deployment.router.close()
            self._started = False

    @property
    def router(self) -> Router | None:
        return self._deployment.router if self._deployment else None

    def visible_models(self, caller: Caller) -> list[ModelCard]:
        return [card for name, card in self._cards.items() if caller.may_use(name)]

    def model_card(self, caller: Caller, model: str) -> ModelCard:
        card = self._cards.get(model)
        # A model outside the key's scope is reported exactly like a missing one.
        if card is None or not caller.may_use(model):
            raise ModelNotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
            )
        return card

    async def _resolve(self, caller: Caller, model: str) -> tuple[ModelEntry, Router]:
        self.model_card(caller, model)
        deployment = await self.start()
        return deployment.models[model], deployment.router

    async def completions(
        self, caller: Caller, body: CompletionRequest, ctx: RequestContext
    ) -> Response:
        entry, router = await self._resolve(caller, body.model)
        plan = plan_completion(entry, body, max_logprobs=self.max_completion_logprobs)
        return await self._run(caller, entry, router, plan, ctx)

    async def chat(
        self, caller: Caller, body: ChatCompletionRequest, ctx: RequestContext
    ) -> Response:
        entry, router = await self._resolve(caller, body.model)
        return await self._run(caller, entry, router, plan_chat(entry, body), ctx)

    async def _run(
        self, caller: Caller, entry: ModelEntry, router: Router, plan: Plan, ctx: RequestContext
    ) -> Response:
        ticket = Ticket(
            request_id=ctx.request_id,
            caller=caller,
            model=entry.id,
            endpoint=plan.endpoint,
            prompt_tokens=sum(len(p.token_ids) for p in plan.prompts),
            max_tokens=plan.max_tokens,
            completions=len(plan.prompts) * plan.params.n,
            stream=plan.stream,
            user=plan.user,
            received_at=ctx.received_at,
        )
        router.check_available(entry.id)  # a 503 now costs the caller no quota
        admission = await self.admitter.admit(ticket)
        job = _Job(self, router, entry, ticket, plan, admission, ctx, next(self._sequence))
        try:
            await self.meter.record(ticket)
        except BaseException:
            await job.finish("error", "metering_failed")
            raise
        return await (job.stream() if plan.stream else job.complete())


async def get_generation(request: Request) -> GenerationService:  # async: no thread pool
    generation: GenerationService = request.app.state.services.generation
    return generation


GenerationDep = Annotated[GenerationService, Depends(get_generation)]


def _card(model: str, created: int, owned_by: str) -> ModelCard:
    return ModelCard(id=model, object="model", created=created, owned_by=owned_by)


class _Job:
    """One admitted request: runs its generations, counts usage, settles once."""

    def __init__(
        self,
        service: GenerationService,
        router: Router,
        entry: ModelEntry,
        ticket: Ticket,
        plan: Plan,
        admission: Admission,
        ctx: RequestContext,
        sequence: int,
    ):
        self.service, self.router, self.entry = service, router, entry
        self.ticket, self.plan = ticket, plan
        self.admission, self.ctx = admission, ctx
        tenant = ticket.caller.account_id
        self.requests = [
            BackendRequest(
                f"{ticket.request_id}.{sequence}.{i}",
                p.token_ids,
                plan.params,
                tenant=tenant,
                prompt_text=p.engine_text,
            )
            for i, p in enumerate(plan.prompts)
        ]
        self.final: dict[int, FinalUsage] = {}
        self.prompt_seen: dict[int, int] = {}
        self.completion_seen: dict[tuple[int, int], int] = {}
        self.first_token_at: dt.datetime | None = None
        self.finished = False
        self.headers = dict(admission.headers)

    # ---- generation ---------------------------------------------------------------------

    async def events(self) -> AsyncGenerator[tuple[int, GenerationDelta], None]:
        router, model = self.router, self.entry.id
        streams = [router.generate(model, request) for request in self.requests]
        source = merge(streams) if len(streams) > 1 else _tagged(streams[0])
        async with aclosing(source):
            async for position, event in source:
                if isinstance(event, FinalUsage):
                    self.final[position] = event
                    continue
                if self.first_token_at is None:
                    self.first_token_at = dt.datetime.now(dt.UTC)
                self.prompt_seen[position] = event.prompt_tokens
                self.completion_seen[position, event.index] = event.completion_tokens
                yield position, event

    async def _collect(self) -> None:
        async with aclosing(self.events()) as events:
            async for position, delta in events:
                self.plan.renderer.add(position, delta)

    async def complete(self) -> Response:
        status: OutcomeStatus = "error"
        code: str | None = None
        try:
            await until_disconnect(self.ctx.receive, self._collect())
            status = "ok"
        except ClientDisconnected:
            status = "aborted"
            return Response(status_code=499)  # nobody reads it; the client is gone
        except SluicegateError as exc:
            code = exc.code
            raise
        except BackendError as exc:
            code = BackendUnavailable.code
            raise BackendUnavailable(f"The backend failed while generating: {exc}") from exc
        finally:
            await self.finish(status, code)
        body = self.plan.renderer.body(usage(*self.usage()))
        return Response(orjson.dumps(body), media_type=JSON, headers=self.headers)

    async def stream(self) -> Response:
        events = self.events()
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except SluicegateError as exc:
            await self.finish("error", exc.code)
            raise
        except BackendError as exc:
            await self.finish("error", BackendUnavailable.code)
            raise BackendUnavailable(f"The backend failed: {exc}") from exc
        except BaseException:
            await self.finish("aborted")
            raise
        return EventStreamResponse(self._frames(events, first), headers=self.headers)

    async def _frames(
        self,
        events: AsyncGenerator[tuple[int, GenerationDelta], None],
        first: tuple[int, GenerationDelta] | None,
    ) -> AsyncGenerator[bytes, None]:
        renderer = self.plan.renderer
        # Unless the loop completes or fails, the client went away (close or cancel).
        status: OutcomeStatus = "aborted"
        code: str | None = None
        try:
            async with aclosing(events):
                if first is not None and (frame := renderer.chunk(*first)):
                    yield frame
                async for position, delta in events:
                    if frame := renderer.chunk(position, delta):
                        yield frame
            status = "ok"
            # The ledger row is final before the last byte leaves (the `finally` is a no-op).
            await self.finish(status)
            if self.plan.include_usage:
                yield sse(renderer.envelope.wrap(renderer.object, [], usage(*self.usage())))
            yield DONE
        except (SluicegateError, BackendError) as exc:
            status = "error"
            code = exc.code if isinstance(exc, SluicegateError) else "backend_error"
            message = f"Generation failed: {exc}"
            await self.finish(status, code)
            yield sse(error_body(message, SERVER_ERROR, code=code))
        finally:
            await self.finish(status, code)

    # ---- accounting -----------------------------------------------------------------------

    def usage(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens as the engines counted them."""
        prompt = completion = cached = 0
        for position in range(len(self.requests)):
            final = self.final.get(position)
            if final is not None:
                prompt += final.prompt_tokens
                completion += final.completion_tokens
                cached += final.cached_tokens
            else:  # interrupted: the engines' running counts so far
                prompt += self.prompt_seen.get(position, 0)
                seen = sum(n for (p, _), n in self.completion_seen.items() if p == position)
                # A local engine also reports tokens it generated that nobody read.
                reported = self.requests[position].engine_completion_tokens or 0
                completion += max(seen, reported)
        return prompt, completion, cached

    async def finish(self, status: OutcomeStatus, code: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        prompt, completion, cached = self.usage()
        outcome = Outcome(
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            finished_at=dt.datetime.now(dt.UTC),
            first_token_at=self.first_token_at,
            latency_ms=int((time.perf_counter() - self.ctx.started) * 1000),
            backend=self.requests[0].served_by,
            error_code=code,
        )
        await self.admission.settle(outcome)
        await self.service.meter.settle(self.ticket, outcome)


async def _tagged(
    stream: AsyncGenerator[GenerationDelta | FinalUsage, None],
) -> AsyncGenerator[tuple[int, GenerationDelta | FinalUsage], None]:
    async with aclosing(stream):
        async for event in stream:
            yield 0, event


async def open_generation(settings: Settings) -> GenerationService:
    """The app's generation service from `settings.config_path` (default: local `tiny`).

    In development the model loads on the first request (tests that never generate never
    pay for it); in production it loads here, so a bad config fails at boot.
    """
    service = GenerationService(load_config(settings.config_path))
    if settings.environment == "production":
        await service.start()
    return service
