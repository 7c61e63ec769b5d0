"""Turning a page's data into a response: the templates, their filters, redirects.

Autoescaping is on for every template, so any user string (a use case, a key name, a
rejection reason) is rendered as text; nothing in the console marks a string safe.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.console.context import console_of
from api.console.csrf import token_for
from api.console.session import NoticeKind
from billing.export import dollars

TEMPLATES_DIR = Path(__file__).parent / "templates"


def build_templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt variable is a test failure, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(when=when, day=day, number=number, dollars=dollars, percent=percent)
    return Jinja2Templates(env=environment)


def when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def day(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d") if value else "—"


def number(value: int | None) -> str:
    return f"{value:,}" if value is not None else "—"


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def root(request: Request) -> str:
    """The console's own prefix (`/console`), wherever it is mounted."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render `template` with what every page needs; shows (and clears) the session's notice."""
    console = console_of(request)
    session = console.session
    console.session = session.without_notice()
    base = {
        "root": root(request),
        "csrf_token": token_for(console.kit.secret, session.sid),
        "viewer": session,
        "notice": session.notice,
        "notice_kind": session.notice_kind,
    }
    return console.kit.templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )


def redirect(
    request: Request, path: str, *, notice: str | None = None, kind: NoticeKind = "success"
) -> RedirectResponse:
    """303 to a console path (POST -> GET), with a notice for the next page."""
    console = console_of(request)
    if notice is not None:
        console.session = console.session.with_notice(notice, kind)
    return RedirectResponse(root(request) + path, status_code=303)
