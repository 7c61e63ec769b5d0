"""The console's own middleware: its session in, security headers and the cookie out.

Pure ASGI like the gateway's (api/middleware.py), and only on the console's sub-app, so the
API never pays for it.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.context import ConsoleKit, ConsoleRequest
from api.console.session import COOKIE_NAME, COOKIE_PATH, ConsoleSession

# No inline script or style anywhere: every script and stylesheet is a file under /static.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class ConsoleMiddleware:
    def __init__(self, app: ASGIApp, *, kit: ConsoleKit) -> None:
        self.app = app
        self.kit = kit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = HTTPConnection(scope).cookies.get(COOKIE_NAME)
        presented = self.kit.codec.loads(cookie)
        session = presented or ConsoleSession.fresh()
        console = ConsoleRequest(kit=self.kit, session=session, presented=presented is not None)
        scope.setdefault("state", {})["console"] = console

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._finish_headers(message, console)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _finish_headers(self, message: Message, console: ConsoleRequest) -> None:
        headers = MutableHeaders(scope=message)
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        is_page = headers.get("content-type", "").startswith("text/html")
        if is_page or 300 <= message["status"] < 400:
            # Pages may show secrets (a new key) and differ per session: never cached.
            headers["cache-control"] = "no-store"
            headers.append("set-cookie", self._cookie(console.session))

    def _cookie(self, session: ConsoleSession) -> str:
        """Written with every page (its notice may have changed); the browser forgets it after
        the idle timeout, but the server's row decides whether the session lives."""
        attributes = [
            f"{COOKIE_NAME}={self.kit.codec.dumps(session)}",
            f"Path={COOKIE_PATH}",
            f"Max-Age={int(self.kit.policy.idle.total_seconds())}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if self.kit.secure_cookies:
            attributes.append("Secure")
        return "; ".join(attributes)
