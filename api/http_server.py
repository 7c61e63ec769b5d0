"""What uvicorn answers, logs and tolerates by itself, held to the app's rules.

- A request uvicorn cannot parse (a malformed `Content-Length`, a broken header line) never
  reaches the app: uvicorn answers it with a plain-text 400. `JsonErrorsProtocol` (uvicorn's
  own protocol with that one answer replaced) sends docs/WIRE.md's JSON error instead.
  `sluicegate serve` uses it; with the uvicorn command line, pass
  `--http api.http_server:JsonErrorsProtocol`.
- The same protocol closes connections that never send a whole request (api/read_deadlines.py:
  408 after `SLUICEGATE_HTTP_HEADER_TIMEOUT_S` for the head, `SLUICEGATE_HTTP_BODY_TIMEOUT_S`
  of silence in a body) and answers 503 to connections past `SLUICEGATE_HTTP_MAX_CONNECTIONS`
  (per process). uvicorn instantiates the protocol itself, so the limits come from the
  environment's settings, unless a class made by `with_limits` carries its own (tests).
- uvicorn's access log writes each path with its query string, so a key sent as
  `?api_key=…` would be written to the log. `redacted_access_log()` (entered by the app for
  as long as it runs, however it is served) drops query strings from those lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import INVALID_REQUEST, SERVER_ERROR, error_body, retry_headers
from api.read_deadlines import ConnectionLimits, ReadDeadlines
from core.config import get_settings

ACCESS_LOGGER = "uvicorn.access"
log = logging.getLogger(__name__)

UNPARSABLE = (
    "We could not parse your HTTP request: its request line or a header (such as "
    "Content-Length) is malformed."
)
TOO_SLOW = "Your request did not arrive in time: send the whole request without pausing."
TOO_MANY = "The server has too many open connections. Retry shortly."


def _error_400() -> tuple[int, dict[str, Any], dict[str, str]]:
    return 400, error_body(UNPARSABLE, INVALID_REQUEST, code="invalid_http"), {}


def _error_408() -> tuple[int, dict[str, Any], dict[str, str]]:
    return 408, error_body(TOO_SLOW, INVALID_REQUEST, code="request_timeout"), {}


def _error_503() -> tuple[int, dict[str, Any], dict[str, str]]:
    body = error_body(TOO_MANY, SERVER_ERROR, code="too_many_connections")
    return 503, body, retry_headers(1.0)


def limits_from_settings() -> ConnectionLimits:
    settings = get_settings()
    return ConnectionLimits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        max_connections=settings.http_max_connections,
    )


class _Guarded:
    """What both protocols add to uvicorn's: JSON answers of their own, read deadlines and
    the connection cap (see the module's docstring). Mixed in before uvicorn's protocol."""

    connection_limits: ClassVar[ConnectionLimits | None] = None  # None: from the settings
    transport: asyncio.Transport
    connections: Any
    server_state: Any
    flow: Any
    cycle: Any
    loop: asyncio.AbstractEventLoop
    deadlines: ReadDeadlines | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        limits = self.connection_limits or limits_from_settings()
        if len(self.connections) > limits.max_connections:
            log.warning("refused a connection: %d open", len(self.connections) - 1)
            self._answer_and_close(*_error_503())
            return
        self.deadlines = ReadDeadlines(
            self.loop,
            limits,
            expired=self._read_timed_out,
            reading_paused=lambda: bool(self.flow.read_paused),
        )
        self.deadlines.head_started()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadlines is not None:
            self.deadlines.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(*_error_400())

    def _read_timed_out(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            cycle.keep_alive = False  # answering already: finish that, then close
            return
        self._answer_and_close(*_error_408())

    def _answer_and_close(self, status: int, body: dict[str, Any], extra: dict[str, str]) -> None:
        """Write a whole JSON response past the protocol's own state, then close."""
        if self.transport.is_closing():
            return
        content = json.dumps(body).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
            (b"connection", b"close"),
            *((name.encode(), value.encode()) for name, value in extra.items()),
        ]
        phrase = HTTPStatus(status).phrase.encode()
        head = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(head + b"\r\n" + content)
        self.transport.close()


class JsonErrorsH11(_Guarded, H11Protocol):
    """uvicorn's h11 protocol with the app's answers, read deadlines and connection cap."""

    conn: h11.Connection

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        deadlines = self.deadlines
        if deadlines is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            deadlines.head_done()
        elif state is h11.IDLE:
            if self.conn.trailing_data[0]:  # part of the next request's head
                deadlines.head_started()
        else:
            deadlines.body_done()


JsonErrorsProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn: h11 is what it falls back to
    JsonErrorsProtocol = JsonErrorsH11
else:

    class JsonErrorsHttpTools(_Guarded, HttpToolsProtocol):
        """uvicorn's httptools protocol with the app's answers, deadlines and cap."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.deadlines is not None:
                self.deadlines.head_started()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if self.deadlines is not None:
                self.deadlines.head_done()

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self.deadlines is not None:
                self.deadlines.body_arrived()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self.deadlines is not None:
                self.deadlines.body_done()

    JsonErrorsProtocol = JsonErrorsHttpTools


def with_limits(
    limits: ConnectionLimits, protocol: type[asyncio.Protocol] = JsonErrorsProtocol
) -> type[asyncio.Protocol]:
    """`protocol` with limits of its own instead of the environment's (for tests)."""
    return type(f"Limited{protocol.__name__}", (protocol,), {"connection_limits": limits})


class QueryStringsDropped(logging.Filter):
    """Cuts the query string from uvicorn's access lines (`'%s - "%s %s HTTP/%s" %d'`).

    The third argument is the path with its query string, quoted so a `?` in the path itself
    is `%3F`: the first `?` starts the query.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


@contextmanager
def redacted_access_log() -> Iterator[None]:
    logger = logging.getLogger(ACCESS_LOGGER)
    dropped = QueryStringsDropped()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
