"""The console as a sub-application mounted at `/console`, sharing the gateway's state.

Its own middleware (session, security headers) and error pages (HTML) apply to its pages
only; the API's routes, middleware order and OpenAPI document are untouched by it.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from api.console import admin_access, admin_billing, admin_pages, portal_access, portal_pages
from api.console.context import ConsoleKit
from api.console.errors import install_console_errors
from api.console.middleware import ConsoleMiddleware
from api.console.render import build_templates
from api.console.session import SessionCodec
from api.console.session_store import LIFETIME, load_session
from auth.console_sessions import SessionPolicy
from core.config import Settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
ROUTERS = (
    portal_access.router,
    portal_pages.router,
    admin_access.router,
    admin_pages.router,
    admin_billing.router,
)


def console_secret(settings: Settings) -> str:
    if settings.console_secret is not None:
        return settings.console_secret.get_secret_value()
    if settings.environment != "development":
        log.warning(
            "SLUICEGATE_CONSOLE_SECRET is not set: console sessions are signed with a secret "
            "of this process only (they end on restart and do not cross processes)"
        )
    return secrets.token_urlsafe(32)


def build_console(
    parent: FastAPI, settings: Settings, telemetry: TelemetryConfig | None
) -> FastAPI:
    secret = console_secret(settings)
    kit = ConsoleKit(
        secret=secret,
        codec=SessionCodec(secret),
        templates=build_templates(),
        secure_cookies=settings.environment != "development",
        policy=SessionPolicy(
            idle=dt.timedelta(seconds=settings.console_idle_timeout_s), lifetime=LIFETIME
        ),
    )
    console = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry=telemetry,
        dependencies=[Depends(load_session)],  # every page: who is signed in, from the row
    )
    console.state = parent.state  # the services the parent's lifespan builds
    console.add_middleware(ConsoleMiddleware, kit=kit)
    install_console_errors(console)
    console.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        console.include_router(router)
    return console
