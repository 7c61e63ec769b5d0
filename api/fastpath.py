"""The generation routes' fast path: endpoints that take the `Request` and answer themselves.

`/v1/completions` and `/v1/chat/completions` are the gateway's hot path, and per request
FastAPI's machinery around an endpoint cost more than most steps of the pipeline behind it.
Measured under load: solving parameters and dependencies took about 7% of the gateway's CPU
(even for an endpoint that only takes the `Request`); matching included routers, two exit
stacks and two exception wrappers per request took a fifth of what remained.

- `RequestRoute` (as `APIRouter(route_class=RequestRoute)`) hands the request straight to
  its endpoint, with no parameter solving. It is still an `APIRoute`: it keeps its OpenAPI
  entry (declare the body and security with `openapi_extra`) and FastAPI's routing.
- `DirectRoutes`, a pure ASGI middleware, calls the endpoints of such routes directly for
  their exact method and path, and maps errors with the app's own exception handlers
  (every kind in `api.errors.HANDLED_ERRORS`, database outages among them), so a
  client sees exactly what FastAPI's routing would have produced. Anything else (another
  method, a trailing slash, every other route) goes on to FastAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import HANDLED_ERRORS

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class RequestRoute(APIRoute):
    """Use as `APIRouter(route_class=RequestRoute)` for `async def f(request) -> Response`."""

    def get_route_handler(self) -> Endpoint:
        dependant = self.dependant
        solved = (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.body_params,
            dependant.dependencies,
        )
        if any(solved) or not inspect.iscoroutinefunction(self.endpoint):
            raise TypeError(
                f"{self.path}: a RequestRoute endpoint is `async def f(request: Request)` "
                "returning a Response; FastAPI would not solve its other parameters"
            )
        endpoint: Endpoint = self.endpoint
        return endpoint


class DirectRoutes:
    """Dispatches the `RequestRoute`s of `routers` without FastAPI's routing (see above).

    Install it inside the middlewares every response needs (request ids, limits headers):
    it answers the requests it takes itself.
    """

    def __init__(self, app: ASGIApp, *, routers: Iterable[APIRouter]) -> None:
        self.app = app
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        for router in routers:
            for route in router.routes:
                if isinstance(route, RequestRoute) and not route.param_convertors:
                    for method in route.methods or ():
                        self.endpoints[method, route.path] = route.get_route_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint = self.endpoints.get((scope["method"], scope["path"]))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except HANDLED_ERRORS as exc:
            response = await _handled(scope, request, exc)
        # Anything else is a bug: it goes on to Starlette's ServerErrorMiddleware (a 500),
        # as it would from FastAPI's routing.
        await response(scope, receive, send)


async def _handled(scope: Scope, request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give for `exc` (FastAPI's own mapping)."""
    handlers = scope["app"].exception_handlers
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc
