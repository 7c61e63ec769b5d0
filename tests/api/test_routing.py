"""`RequestRoute` and `DirectRoutes`: the generation routes' fast path answers like FastAPI."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from api.errors import install_error_handlers
from api.fastpath import DirectRoutes, RequestRoute
from core.errors import InvalidRequest, RateLimited


def echo_router() -> APIRouter:
    router = APIRouter(route_class=RequestRoute)

    @router.post("/echo", openapi_extra={"security": [{"HTTPBearer": []}]})
    async def echo(request: Request) -> Response:
        body = await request.json()
        if "invalid" in body:
            raise InvalidRequest("told to fail", param="invalid")
        if "limited" in body:
            raise RateLimited(
                "slow down",
                limit_type="requests",
                retry_after_s=2.5,
                headers={"x-ratelimit-x": "1"},
            )
        if "http" in body:
            raise HTTPException(418, "teapot")
        if "bug" in body:
            raise RuntimeError("a bug")
        routed = "route" in request.scope  # FastAPI's router marks the scope it routed
        return JSONResponse({"got": body, "q": request.query_params.get("q"), "routed": routed})

    return router


def app_with(*, direct: bool) -> FastAPI:
    router = echo_router()
    app = FastAPI()
    install_error_handlers(app)
    if direct:
        app.add_middleware(DirectRoutes, routers=[router])
    app.include_router(router)
    return app


async def call(app: FastAPI, method: str, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body", [{"a": 1}, {"invalid": 1}, {"limited": 1}, {"http": 1}, {"bug": 1}]
)
async def test_direct_dispatch_answers_exactly_like_fastapi_routing(body: dict[str, int]) -> None:
    routed = await call(app_with(direct=False), "POST", "/echo?q=1", json=body)
    direct = await call(app_with(direct=True), "POST", "/echo?q=1", json=body)
    assert direct.status_code == routed.status_code
    if body == {"a": 1}:
        assert routed.json() == {"got": body, "q": "1", "routed": True}
        assert direct.json() == {"got": body, "q": "1", "routed": False}
    else:
        assert direct.headers == routed.headers
        assert direct.content == routed.content
    expected = {"invalid": 400, "limited": 429, "http": 418, "bug": 500}
    assert routed.status_code == expected.get(next(iter(body)), 200)


async def test_what_the_table_does_not_cover_goes_on_to_fastapi() -> None:
    app = app_with(direct=True)
    assert (await call(app, "GET", "/echo")).status_code == 405
    slash = await call(app, "POST", "/echo/", json={"a": 1})
    assert slash.status_code == (await call(app_with(direct=False), "POST", "/echo/")).status_code
    assert (await call(app, "POST", "/nowhere", json={})).status_code == 404


def test_the_route_keeps_its_openapi_entry() -> None:
    operation = app_with(direct=True).openapi()["paths"]["/echo"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "parameters" not in operation and "requestBody" not in operation


def test_an_endpoint_with_parameters_to_solve_is_refused() -> None:
    router = APIRouter(route_class=RequestRoute)
    with pytest.raises(TypeError, match="RequestRoute"):

        @router.get("/items/{item_id}")
        async def item(request: Request, item_id: int) -> Response:
            return Response()

    with pytest.raises(TypeError, match="RequestRoute"):

        @router.get("/sync")
        def sync(request: Request) -> Response:
            return Response()
