"""The FastAPI application factory. No state at import time: everything lives in the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from api.admission import add_rate_limit_headers
from api.console.app import build_console
from api.errors import install_error_handlers
from api.fastpath import DirectRoutes
from api.http_server import redacted_access_log
from api.metrics import GatewayMetrics
from api.middleware import RequestContextMiddleware
from api.request_log import RequestLog
from api.routes import (
    admin,
    chat,
    completions,
    health,
    key_limits,
    keys,
    metrics,
    models,
    prices,
    reports,
    usage,
    waitlist,
)
from api.services import build_services
from core.config import Settings, get_settings

VERSION = "0.1.0"
GENERATION_ROUTERS = (completions.router, chat.router)
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `uvicorn --factory api.app:create_app` reads settings from the env."""
    settings = settings or get_settings()
    gateway_metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.enter_context(redacted_access_log())
            app.state.services = await build_services(
                settings, stack, registry=gateway_metrics.registry
            )
            with frozen_heap(settings.gc_threshold):
                yield

    app = FastAPI(
        title="Sluicegate",
        version=VERSION,
        summary="Access-controlled, OpenAI-compatible text generation",
        lifespan=lifespan,
        telemetry=app_telemetry(settings),
    )
    app.state.metrics = gateway_metrics
    install_error_handlers(app)
    install_middleware(app, settings, gateway_metrics)
    include_routes(app)
    # The web console: HTML pages over the same services (api/console/), after the API.
    app.mount("/console", build_console(app, settings, app_telemetry(settings)))
    return app


@contextmanager
def frozen_heap(threshold: int) -> Iterator[None]:
    """While the app runs: what exists at startup (modules, routes, services) lives as long
    as the process, so move it out of the cyclic collector's reach, or every collection
    re-walks it; and collect the young generation every `threshold` allocations."""
    gc.freeze()
    default_threshold = gc.get_threshold()
    gc.set_threshold(threshold, *default_threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*default_threshold)
        # Frozen objects are never collected: thaw them, or a stopped app's cycles (its
        # engine and KV pool among them) outlive it.
        gc.unfreeze()


def install_middleware(app: FastAPI, settings: Settings, gateway_metrics: GatewayMetrics) -> None:
    # Innermost: the generation routes, dispatched without FastAPI's routing (api/fastpath.py).
    app.add_middleware(DirectRoutes, routers=GENERATION_ROUTERS)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_response=gateway_metrics.observe,
        before_response=[add_rate_limit_headers],
    )
    if settings.log_format == "json":
        app.add_middleware(RequestLog)  # outermost: it sees every response, errors included


def include_routes(app: FastAPI) -> None:
    # Routes are matched in order: the generation endpoints (the hot path) go first.
    for router in (*GENERATION_ROUTERS, models.router):
        app.include_router(router)
    for router in (health.router, metrics.router, waitlist.router, keys.router, admin.router):
        app.include_router(router)
    app.include_router(key_limits.router)
    for router in (usage.router, reports.router, prices.router):
        app.include_router(router)


def app_telemetry(settings: Settings) -> TelemetryConfig | None:
    return None if settings.opentelemetry else NO_TELEMETRY
