"""What the console keeps per app (`ConsoleKit`) and per request (`ConsoleRequest`).

`api.console.middleware` puts a `ConsoleRequest` into each request's state; pages and
dependencies read it with `console_of(request)` and replace its session to change it (the
middleware writes the cookie as the response starts).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.templating import Jinja2Templates

from api.console.session import ConsoleSession, SessionCodec
from auth.console_sessions import SessionPolicy


@dataclass(frozen=True, slots=True)
class ConsoleKit:
    secret: str  # signs the session cookies and the CSRF tokens
    codec: SessionCodec
    templates: Jinja2Templates
    secure_cookies: bool  # `Secure` outside development
    policy: SessionPolicy  # idle timeout and lifetime of a signed-in session


@dataclass(slots=True)
class ConsoleRequest:
    kit: ConsoleKit
    session: ConsoleSession
    presented: bool = False  # the browser sent a valid cookie (else its id is brand new)


def console_of(request: Request) -> ConsoleRequest:
    console: ConsoleRequest = request.state.console
    return console
