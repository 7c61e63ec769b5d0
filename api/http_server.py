"""What uvicorn answers and logs by itself, held to the app's rules.

- A request uvicorn cannot parse (a malformed `Content-Length`, a broken header line) never
  reaches the app: uvicorn answers it with a plain-text 400. `JsonErrorsProtocol` (uvicorn's
  own protocol with that one answer replaced) sends docs/WIRE.md's JSON error instead.
  `sluicegate serve` uses it; with the uvicorn command line, pass
  `--http api.http_server:JsonErrorsProtocol`.
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

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import INVALID_REQUEST, error_body

ACCESS_LOGGER = "uvicorn.access"
UNPARSABLE = (
    "We could not parse your HTTP request: its request line or a header (such as "
    "Content-Length) is malformed."
)


def _json_400() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(error_body(UNPARSABLE, INVALID_REQUEST, code="invalid_http")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    return body, headers


class JsonErrorsH11(H11Protocol):
    """uvicorn's h11 protocol, answering unparsable requests in OpenAI's error shape."""

    def send_400_response(self, msg: str) -> None:
        body, headers = _json_400()
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


JsonErrorsProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn: h11 is what it falls back to
    JsonErrorsProtocol = JsonErrorsH11
else:

    class JsonErrorsHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering unparsable requests in OpenAI's shape."""

        def send_400_response(self, msg: str) -> None:
            body, headers = _json_400()
            lines = [*self.server_state.default_headers, *headers]
            head = b"".join(name + b": " + value + b"\r\n" for name, value in lines)
            self.transport.write(STATUS_LINE[400] + head + b"\r\n" + body)
            self.transport.close()

    JsonErrorsProtocol = JsonErrorsHttpTools


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
