"""CSRF tokens: every console form carries one; every state change (POST) must present it.

A token is an HMAC of the session id under the console secret, so it is bound to one
browser session and changes at sign-in (a new id); the page never shows the id itself. The
session cookie is also `SameSite=Strict`; the token is the check that does not depend on the
browser honouring that.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from api.console.context import console_of
from core.errors import PermissionDenied

FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = (
    "This form has expired or did not come from this site (its security token is missing "
    "or wrong). Reload the page and try again."
)


class CsrfRefused(PermissionDenied):
    code = "csrf_refused"


def token_for(secret: str, sid: str) -> str:
    return hmac.new(secret.encode(), f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()


async def require_csrf(request: Request) -> None:
    """Router dependency: a POST without the session's token is refused (403) before the
    route runs."""
    if request.method in SAFE_METHODS:
        return
    console = console_of(request)
    sent = request.headers.get(HEADER)
    if sent is None:
        sent_field = (await request.form()).get(FIELD)
        sent = sent_field if isinstance(sent_field, str) else None
    expected = token_for(console.kit.secret, console.session.sid)
    if sent is None or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused(REFUSED)
