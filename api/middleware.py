"""Pure ASGI middleware for every HTTP request: request id, processing time, body size limit,
and the text rule of `core.inputs` for paths and query strings.

Pure ASGI (no BaseHTTPMiddleware) because it sits on the gateway's hot path and must not
buffer streamed responses.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import INVALID_REQUEST, error_body
from core.errors import PayloadTooLarge
from core.inputs import UNSAFE_TEXT

MALFORMED_LENGTH = "The Content-Length header is not a number of bytes."

# Client-chosen ids are echoed into headers and logs: keep them short and inert.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return f"req_{os.urandom(16).hex()}"


# Hooks that may add headers to a response as it starts (e.g. the rate-limit headers).
ResponseStartHook = Callable[[Scope, Message], Awaitable[None]]


class RequestContextMiddleware:
    """Sets `request.state.request_id`, adds `x-request-id` and `openai-processing-ms`
    to every response, and answers 413 to bodies over `max_body_bytes`.

    `before_response` hooks run as each response starts; the app's other per-response
    headers go there rather than into a middleware of their own, because every ASGI layer
    wraps every message of every response on the hot path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        on_response: Callable[[int, float], None] | None = None,
        before_response: Sequence[ResponseStartHook] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_response = on_response  # (status, seconds to the response start), for metrics
        self.before_response = tuple(before_response)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = declared_length = chunked = None
        for name, value in scope["headers"]:  # one pass; names arrive lower-cased
            if name == b"x-request-id":
                offered = value
            elif name == b"content-length":
                declared_length = value
            elif name == b"transfer-encoding":
                chunked = value
        offered_id = bytes(offered).decode("latin-1") if offered is not None else ""
        request_id = offered_id if _SAFE_REQUEST_ID.fullmatch(offered_id) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        hooks, on_response = self.before_response, self.on_response

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                for hook in hooks:
                    await hook(scope, message)
                elapsed = time.perf_counter() - started
                # A new list: the response's own header list is left as it was.
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"openai-processing-ms", b"%d" % int(elapsed * 1000)),
                ]
                if on_response is not None:
                    on_response(message["status"], elapsed)
            await send(message)

        if scope["query_string"] or "\x00" in scope["path"]:  # never on the generation routes
            refused = url_problem(scope["path"], scope["query_string"])
            if refused is not None:
                await _send_error(send_with_headers, 400, refused)
                return
        if declared_length is not None:
            # The server (h11/httptools) refuses bodies longer than their Content-Length.
            declared = bytes(declared_length)
            if not declared.isdigit():  # the servers refuse these too; a 400, never a 413
                error = error_body(MALFORMED_LENGTH, INVALID_REQUEST, code="invalid_http")
                await _send_error(send_with_headers, 400, error)
                return
            # (A 19-digit length is past any limit; int() of thousands of digits would raise.)
            if len(declared) > 18 or int(declared) > self.max_body_bytes:
                await self._too_large(send_with_headers)
                return
        elif chunked is not None:
            buffered = await self._read_limited(receive)
            if buffered is None:
                await self._too_large(send_with_headers)
                return
            receive = _replay(buffered, receive)
        await self.app(scope, receive, send_with_headers)

    async def _read_limited(self, receive: Receive) -> list[Message] | None:
        """Read a chunked body up front; None once it passes the limit."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _too_large(self, send: Send) -> None:
        message = f"Request body is larger than {self.max_body_bytes} bytes."
        await _send_error(
            send, 413, error_body(message, INVALID_REQUEST, code=PayloadTooLarge.code)
        )


def url_problem(path: str, query_string: bytes) -> dict[str, object] | None:
    """The error body for a path or query the API refuses, else None.

    The text rule of `core.inputs`: a %00 decodes to a NUL, which PostgreSQL refuses (lone
    surrogates cannot occur: paths and queries are decoded with errors="replace"). And a
    parameter given twice is ambiguous (FastAPI would silently take the last one).
    """
    query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    seen: set[str] = set()
    for name, value in query:
        if "\x00" in name + value:
            message = f"Invalid value for '{name}': {UNSAFE_TEXT}."
            return error_body(message, INVALID_REQUEST, param=name, code="invalid_value")
        if name in seen:
            message = f"The query parameter '{name}' is given more than once."
            return error_body(message, INVALID_REQUEST, param=name, code="invalid_value")
        seen.add(name)
    if "\x00" in path:
        message = f"Invalid request URL: {UNSAFE_TEXT}."
        return error_body(message, INVALID_REQUEST, code="invalid_value")
    return None


async def _send_error(send: Send, status: int, error: dict[str, object]) -> None:
    body = json.dumps(error).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
