"""`RequestRoute`: a FastAPI route whose endpoint takes the `Request` and answers itself.

FastAPI's request handler solves an endpoint's parameters, dependencies and body on every
call, even for an endpoint that only takes the `Request`. Profiled under load on the
generation routes that was about 7% of the gateway's CPU per request. A `RequestRoute` hands
the request straight to the endpoint instead; the route is still an `APIRoute`, so it keeps
FastAPI's routing, error handling and OpenAPI entry (declare the body and security with
`openapi_extra`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class RequestRoute(APIRoute):
    """Use as `APIRouter(route_class=RequestRoute)` for `async def f(request) -> Response`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
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
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
