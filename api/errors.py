"""Every error a client sees, in OpenAI's shape: {"error": {message, type, param, code}}.

The one place where typed domain errors (core.errors), request validation, malformed JSON,
unknown routes, database conflicts and database outages become HTTP responses. A database
that refuses connections (`too many clients`), cannot be reached, or a pool with no free
connection is a 503 `database_unavailable` with `Retry-After` on every route
(`core.db_outage` tells an outage from a bug).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import errors as e
from core.db_outage import DATABASE_ERRORS, is_outage

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

# Most specific first: the first class in an error's MRO found here decides the status.
STATUS_BY_ERROR: dict[type[e.SluicegateError], int] = {
    e.InvalidRequest: 400,
    e.AuthenticationFailed: 401,
    e.PermissionDenied: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.RateLimited: 429,
    e.QuotaExceeded: 429,
    e.Unavailable: 503,
    e.GenerationFailed: 500,
}


# Every exception the app's handlers answer (besides the catch-all 500), for dispatchers that
# bypass FastAPI's routing (api/fastpath.py).
HANDLED_ERRORS: tuple[type[Exception], ...] = (
    e.SluicegateError,
    RequestValidationError,
    StarletteHTTPException,
    *DATABASE_ERRORS,
)
DATABASE_UNAVAILABLE = "The database is not accepting requests right now. Retry shortly."


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error body (docs/WIRE.md), as the OpenAPI document declares it."""

    error: ErrorDetail


# Every router declares it as the `default` response: a client (or a fuzzer) reading the
# document learns the error shape, and FastAPI stops declaring the 422 we never send.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorResponse, "description": "An error in OpenAI's shape"}
}


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, type_, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(error: e.SluicegateError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def retry_headers(retry_after_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (rounded up) and the SDKs' more precise `retry-after-ms`."""
    seconds = max(0.0, retry_after_s)
    return {
        "retry-after": str(math.ceil(seconds)),
        "retry-after-ms": str(math.ceil(seconds * 1000)),
    }


def domain_error_response(error: e.SluicegateError) -> JSONResponse:
    status = status_of(error)
    type_ = SERVER_ERROR if status >= 500 else INVALID_REQUEST
    headers: dict[str, str] = {}
    if isinstance(error, e.RateLimited):
        type_ = error.limit_type
        headers = {**error.headers, **retry_headers(error.retry_after_s)}
    elif isinstance(error, e.QuotaExceeded):
        type_ = "insufficient_quota"
        headers = {**error.headers, **retry_headers(error.retry_after_s)}
    elif isinstance(error, e.Unavailable):
        headers = retry_headers(error.retry_after_s)
    elif isinstance(error, e.AuthenticationFailed):
        headers = {"www-authenticate": "Bearer"}
    return error_response(
        status, error.message, type_=type_, param=error.param, code=error.code, headers=headers
    )


def _param_of(loc: Sequence[str | int]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    param = ""
    for part in parts:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param or None


def validation_error_response(error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {"type": "", "loc": (), "msg": "invalid"}
    kind, loc = str(first.get("type", "")), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        message = "We could not parse the JSON body of your request. Send valid JSON."
        return error_response(400, message, code="invalid_json")
    param = _param_of(loc)
    if kind == "missing":
        what = f"parameter: '{param}'" if param else "request body"
        return error_response(
            400, f"Missing required {what}.", param=param, code="missing_required_parameter"
        )
    detail = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    message = f"Invalid value for '{param}': {detail}" if param else f"Invalid request: {detail}"
    return error_response(400, message, param=param, code="invalid_value")


def http_error_response(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return error_response(404, message, code="unknown_url")
    if error.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
        return error_response(405, message, code="method_not_allowed", headers=error.headers)
    type_ = SERVER_ERROR if error.status_code >= 500 else INVALID_REQUEST
    return error_response(error.status_code, str(error.detail), type_=type_, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, e.SluicegateError)
        return domain_error_response(error)

    async def on_validation(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return validation_error_response(error)

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        return http_error_response(request, error)

    async def on_integrity(_: Request, error: Exception) -> JSONResponse:
        # A unique constraint lost a race the domain code checked for; never a 500.
        log.info("integrity error mapped to 409: %s", type(error).__name__)
        return error_response(409, "The request conflicts with existing data.", code="conflict")

    async def on_unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        return error_response(
            500, "The server had an error processing your request.", type_=SERVER_ERROR
        )

    async def on_database(request: Request, error: Exception) -> JSONResponse:
        if not is_outage(error):
            return await on_unexpected(request, error)
        log.warning("database unavailable: %s: %s", type(error).__name__, error)
        return domain_error_response(e.DatabaseUnavailable(DATABASE_UNAVAILABLE))

    app.add_exception_handler(e.SluicegateError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, on_database)
    app.add_exception_handler(IntegrityError, on_integrity)  # more specific: wins by MRO
    app.add_exception_handler(Exception, on_unexpected)
