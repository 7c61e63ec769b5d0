"""Health probes, the error mapping, request ids, processing time and the body size limit."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.services import Services
from core import errors as e
from core.config import Settings
from core.db import create_engine
from tests.api.test_waitlist import APPLICANT, assert_error


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}


async def started(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_readyz_checks_redis(app_settings: Settings, redis_url: str) -> None:
    async for http in started(app_settings.model_copy(update={"redis_url": redis_url})):
        ready = await http.get("/readyz")
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    dead = app_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async for http in started(dead):
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "redis": "unavailable"},
        }
        assert (await http.get("/healthz")).status_code == 200


async def test_readyz_reports_a_dead_database(app: FastAPI, client: httpx.AsyncClient) -> None:
    services: Services = app.state.services
    healthy = services.engine
    services.engine = create_engine("postgresql://postgres@127.0.0.1:1/none")  # nobody listens
    try:
        ready = await client.get("/readyz")
    finally:
        await services.engine.dispose()
        services.engine = healthy
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "unavailable"}
    assert (await client.get("/readyz")).status_code == 200


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"x-request-id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    assert int(echoed.headers["openai-processing-ms"]) >= 0
    generated = await client.get("/healthz")
    assert generated.headers["x-request-id"].startswith("req_")
    unsafe = await client.get("/healthz", headers={"x-request-id": "a b\tc" + "x" * 200})
    assert unsafe.headers["x-request-id"].startswith("req_")
    error = await client.get("/nowhere", headers={"x-request-id": "trace-43"})
    assert error.headers["x-request-id"] == "trace-43"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nowhere"), 404, code="unknown_url")
    assert_error(await client.put("/v1/waitlist"), 405, code="method_not_allowed")


@pytest.fixture
def small_body_settings(app_settings: Settings) -> Settings:
    return app_settings.model_copy(update={"max_body_bytes": 256})


async def test_bodies_over_the_limit_get_413(small_body_settings: Settings) -> None:
    big = {**APPLICANT, "use_case": "x" * 400}
    async for http in started(small_body_settings):
        assert_error(await http.post("/v1/waitlist", json=big), 413, code="payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
            for _ in range(10):
                yield b" " * 64

        chunked = await http.post(
            "/v1/waitlist", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(chunked, 413)

        async def small() -> AsyncIterator[bytes]:
            yield b'{"email": "c@example.com", "name": "C",'
            yield b' "use_case": "A chunked but small application."}'

        accepted = await http.post(
            "/v1/waitlist", content=small(), headers={"content-type": "application/json"}
        )
        assert accepted.status_code == 201, accepted.text


ERRORS: list[tuple[e.SluicegateError, int, str, str | None]] = [
    (e.InvalidRequest("bad", param="temperature"), 400, "invalid_request_error", None),
    (e.ContextLengthExceeded("long"), 400, "invalid_request_error", "context_length_exceeded"),
    (e.PermissionDenied("no"), 403, "invalid_request_error", "permission_denied"),
    (e.ModelNotFound("which?"), 404, "invalid_request_error", "model_not_found"),
    (e.Conflict("again"), 409, "invalid_request_error", "conflict"),
    (
        e.RateLimited("slow down", limit_type="tokens", retry_after_s=9.2),
        429,
        "tokens",
        "rate_limit_exceeded",
    ),
    (e.QuotaExceeded("spent", retry_after_s=60), 429, "insufficient_quota", "insufficient_quota"),
    (e.Overloaded("busy"), 503, "server_error", "overloaded"),
    (e.BackendUnavailable("down"), 503, "server_error", "backend_unavailable"),
    (e.DatabaseUnavailable("later"), 503, "server_error", "database_unavailable"),
]


@pytest.fixture
def raising_app(app: FastAPI) -> FastAPI:
    def raiser(error: e.SluicegateError) -> Callable[[], Awaitable[None]]:
        async def boom() -> None:
            raise error

        return boom

    for index, (error, *_) in enumerate(ERRORS):
        app.add_api_route(f"/test-errors/{index}", raiser(error))

    async def crash() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/test-errors/crash", crash)
    return app


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_domain_errors_map_to_openai_errors(raising_app: FastAPI) -> None:
    async with raising_app.router.lifespan_context(raising_app):
        transport = httpx.ASGITransport(app=raising_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for index, (error, status, type_, code) in enumerate(ERRORS):
                response = await http.get(f"/test-errors/{index}")
                body = assert_error(response, status, code=code, param=error.param)
                assert body["type"] == type_ and body["message"] == error.message
                if status in (429, 503):  # every 503 says when to retry, as a 429 does
                    assert int(response.headers["retry-after"]) >= 1, index
            limited = await http.get("/test-errors/5")
            assert limited.headers["retry-after"] == "10"
            assert limited.headers["retry-after-ms"] == "9200"
            crashed = await http.get("/test-errors/crash")
            body = assert_error(crashed, 500)
            assert body["type"] == "server_error" and "secret" not in crashed.text


async def test_the_gc_threshold_holds_while_serving_and_is_restored(
    app_settings: Settings,
) -> None:
    before = gc.get_threshold()
    async for http in started(app_settings.model_copy(update={"gc_threshold": 12_345})):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert (await http.get("/healthz")).status_code == 200
    assert gc.get_threshold() == before


async def test_a_stopped_app_frees_what_it_built(app_settings: Settings) -> None:
    """The lifespan freezes startup objects out of the cyclic GC; stopping must thaw them,
    or every app a process starts and stops (tests, reloads) keeps its engine and KV pool."""
    app = create_app(app_settings)
    async with app.router.lifespan_context(app):
        services = weakref.ref(app.state.services)
    del app
    gc.collect()
    assert services() is None
