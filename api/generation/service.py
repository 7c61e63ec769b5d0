"""The request pipeline behind /v1/completions and /v1/chat/completions.

resolve model -> tokenize -> context check -> admit -> record -> generate (router) ->
settle (exactly once, in a `finally`: also on errors and client disconnects).

Usage is what the engine counted, never an estimate. Routes call `GenerationService`;
`api.inference_server` uses the same service over a single in-process engine, so the gateway
and the inference server speak exactly the same wire format.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from api.generation.hooks import (
    Admitter,
    Caller,
    Meter,
    NoMeter,
    Ticket,
    Unlimited,
)
from api.generation.job import JSON, InFlight, Job, RequestContext
from api.generation.openai_schemas import (
    MAX_LOGPROBS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    RequestT,
    parse_body,
)
from api.generation.planning import Plan, plan_chat, plan_completion
from api.generation.prompts import ChatPrompts
from backends.catalog import (
    Deployment,
    EngineFactory,
    GatewayConfig,
    ModelEntry,
    build_deployment,
    default_engine_factory,
    load_config,
)
from backends.router import BackendRouter
from core.config import Settings
from core.errors import BackendUnavailable, InvalidRequest, ModelNotFound

log = logging.getLogger(__name__)


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
    try:
        raw = await request.body()
    except ClientDisconnect:  # the body never fully arrived; nobody is left to answer
        raise InvalidRequest("The client closed the connection before sending the body.") from None
    return parse_body(model, raw)


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
        self._preloading: asyncio.Task[None] | None = None
        self.admitter: Admitter = admitter or Unlimited()
        self.meter: Meter = meter or NoMeter()
        self.max_completion_logprobs = max_completion_logprobs
        self._sequence = itertools.count()
        self.in_flight = InFlight()
        self._chat_prompts: dict[str, ChatPrompts] = {}  # per model, made on first use
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
                try:
                    # Loading tokenizers and weights blocks; keep the event loop serving.
                    self._deployment = await asyncio.to_thread(
                        build_deployment, self._config, engine_factory=self._engine_factory
                    )
                except (ValueError, OSError, RuntimeError) as exc:  # bad config: 503s, logged
                    log.error("cannot build the model backends: %s", exc)
                    raise BackendUnavailable(
                        "The model backends could not be started; the operator has been told."
                    ) from exc
            if not self._started:
                await self._deployment.router.start()
                self._started = True
        return self._deployment

    async def wait_settled(self, timeout_s: float) -> None:
        """At shutdown, before the limiter and the ledger close: let every admitted request
        settle (those the server cancelled at its drain deadline too)."""
        unsettled = await self.in_flight.wait_idle(timeout_s)
        if unsettled:
            log.error("%d requests did not settle at shutdown; the sweeper settles them", unsettled)

    def start_in_background(self) -> None:
        """Build and start the backends now, off the request path (`loading` until done)."""
        if self._preloading is None:
            self._preloading = asyncio.get_running_loop().create_task(self._preload())

    @property
    def loading(self) -> bool:
        """A background start is still loading or warming models (/readyz is not ready)."""
        return self._preloading is not None and not self._preloading.done()

    async def _preload(self) -> None:
        started = time.perf_counter()
        try:
            await self.start()
        except BackendUnavailable:
            return  # start() logged why; requests get 503s and retry the start
        elapsed = time.perf_counter() - started
        log.info("models loaded and warmed in %.1f s: %s", elapsed, ", ".join(self._cards))

    async def close(self) -> None:
        if self._preloading is not None and not self._preloading.done():
            self._preloading.cancel()  # a load in its thread finishes unseen
            await asyncio.gather(self._preloading, return_exceptions=True)
        if self._deployment is not None and self._started:
            await self._deployment.router.close()
            self._started = False

    @property
    def router(self) -> BackendRouter | None:
        return self._deployment.router if self._deployment else None

    @property
    def model_ids(self) -> list[str]:
        """Every configured model, in configuration order (the console's quick-start)."""
        return list(self._cards)

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

    async def _resolve(self, caller: Caller, model: str) -> tuple[ModelEntry, BackendRouter]:
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
        prompts = self._chat_prompts.get(entry.id)
        if prompts is None:
            prompts = self._chat_prompts[entry.id] = ChatPrompts(entry.tokenizer)
        return await self._run(caller, entry, router, plan_chat(entry, body, prompts), ctx)

    async def _run(
        self,
        caller: Caller,
        entry: ModelEntry,
        router: BackendRouter,
        plan: Plan,
        ctx: RequestContext,
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
        sequence = next(self._sequence)
        job = Job(self.meter, router, entry, ticket, plan, admission, ctx, sequence, self.in_flight)
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


async def open_generation(settings: Settings) -> GenerationService:
    """The app's generation service from `settings.config_path` (default: local `tiny`).

    In development the model loads on the first request (tests that never generate never
    pay for it), or in the background from startup with `preload_models`; in production it
    loads here, so a bad config fails at boot.
    """
    service = GenerationService(load_config(settings.config_path))
    if settings.environment == "production":
        await service.start()
    elif settings.preload_models:
        service.start_in_background()
    return service
