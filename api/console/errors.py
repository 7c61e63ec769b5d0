"""Errors on console pages are pages too: the API's typed errors, shown as HTML.

The statuses are the API's (`api.errors.status_of`), so a refused action is the same 4xx
whichever door it came through. Not signed in (or a session that just ended) is a 303 to
the right sign-in page.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.console.deps import SignInRequired
from api.console.render import page, redirect
from api.errors import DATABASE_UNAVAILABLE, status_of
from core import errors as e
from core.db_outage import DATABASE_ERRORS, is_outage

log = logging.getLogger(__name__)

SIGN_IN_PATHS = {"developer": "/signin", "admin": "/admin/signin"}
HTTP_MESSAGES = {404: "There is no such page.", 405: "That page cannot be used this way."}


def error_page(request: Request, status: int, message: str) -> Response:
    return page(request, "error.html", status_code=status, status=status, message=message)


def install_console_errors(console: FastAPI) -> None:
    async def on_sign_in(request: Request, error: Exception) -> Response:
        assert isinstance(error, SignInRequired)
        notice = error.reason or "Sign in to continue."
        return redirect(request, SIGN_IN_PATHS[error.where], notice=notice, kind="info")

    async def on_domain(request: Request, error: Exception) -> Response:
        assert isinstance(error, e.SluicegateError)
        return error_page(request, status_of(error), error.message)

    async def on_validation(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return error_page(request, 400, "That request had a missing or malformed field.")

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        message = HTTP_MESSAGES.get(error.status_code, str(error.detail))
        return error_page(request, error.status_code, message)

    async def on_integrity(request: Request, error: Exception) -> Response:
        return error_page(request, 409, "That conflicts with something that changed meanwhile.")

    async def on_unexpected(request: Request, error: Exception) -> Response:
        # Starlette re-raises after this page is sent: the gateway's own handler logs it.
        return error_page(request, 500, "Something went wrong on our side; try again shortly.")

    async def on_database(request: Request, error: Exception) -> Response:
        if not is_outage(error):
            return await on_unexpected(request, error)
        log.warning("database unavailable: %s: %s", type(error).__name__, error)
        return error_page(request, 503, DATABASE_UNAVAILABLE)

    console.add_exception_handler(SignInRequired, on_sign_in)
    for kind in DATABASE_ERRORS:
        console.add_exception_handler(kind, on_database)
    console.add_exception_handler(IntegrityError, on_integrity)
    console.add_exception_handler(Exception, on_unexpected)
    console.add_exception_handler(e.SluicegateError, on_domain)
    console.add_exception_handler(RequestValidationError, on_validation)
    console.add_exception_handler(StarletteHTTPException, on_http)
