"""`RequestRoute`: endpoints that take the Request and answer themselves."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response

from api.errors import install_error_handlers
from api.routing import RequestRoute
from core.errors import InvalidRequest


def app_with(router: APIRouter) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return app


async def test_the_endpoint_gets_the_request_and_errors_keep_their_shape() -> None:
    router = APIRouter(route_class=RequestRoute)

    @router.post("/echo", openapi_extra={"security": [{"HTTPBearer": []}]})
    async def echo(request: Request) -> Response:
        body = await request.json()
        if "fail" in body:
            raise InvalidRequest("told to fail", param="fail")
        return JSONResponse({"got": body, "q": request.query_params.get("q")})

    app = app_with(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/echo?q=1", json={"a": 1})
        assert ok.json() == {"got": {"a": 1}, "q": "1"}
        failed = await client.post("/echo", json={"fail": True})
        assert failed.status_code == 400
        assert failed.json()["error"]["param"] == "fail"
        wrong_method = await client.get("/echo")
        assert wrong_method.status_code == 405
    operation = app.openapi()["paths"]["/echo"]["post"]
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
