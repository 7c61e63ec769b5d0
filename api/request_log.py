"""One structured line per HTTP request (`SLUICEGATE_LOG_FORMAT=json`).

Installed outermost, it logs, once the response is over: the request id, method, path
(never the query string: a key sent as `?api_key=` stays out of the log), status, latency,
and, when known, the account, the key's display prefix (`sk-AbCdEfGh`, never the key or the
Authorization header), the model and the prompt/completion tokens the engine counted. The
pipeline leaves those in the request's ASGI state (`principal`: api/deps.py, `usage`:
api/generation/job.py). In text mode (the default) it is not installed and uvicorn's access
log stays as it was.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LOGGER = "sluicegate.requests"
log = logging.getLogger(REQUEST_LOGGER)


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an error escaped the app

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            latency_ms = int((time.perf_counter() - started) * 1000)
            log.info("request", extra=request_fields(scope, status, latency_ms))


def request_fields(scope: Scope, status: int, latency_ms: int) -> dict[str, Any]:
    state = scope.get("state", {})
    principal = state.get("principal")
    model, prompt_tokens, completion_tokens = state.get("usage", (None, None, None))
    return {
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "latency_ms": latency_ms,
        "account_id": getattr(principal, "account_id", None),
        "key_prefix": getattr(principal, "key_prefix", None) or None,
        "model": model,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
