"""What uvicorn answers and logs by itself (issue #11, item 9), through a real socket.

`sluicegate serve` is run as a real process: a request uvicorn cannot parse gets OpenAI's
JSON error shape, and a key sent in a query string never reaches the access log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.http_server import JsonErrorsH11
from tests.gateway_process import ROOT, STARTUP_TIMEOUT_S, answers, free_port, stop_group
from tests.live import serve_in_thread

SECRET = "sk-ThisMustNeverBeLogged0123456789abcdefghijk"


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is (httpx would refuse to send it) and read the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


MALFORMED = [
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n{}",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
]


def assert_openai_400(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http"


@pytest.fixture
def served(migrated_db_url: str, admin_key: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`sluicegate serve` in its own process; yields (base URL, file of its output)."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=migrated_db_url,
        SLUICEGATE_ADMIN_KEY=admin_key,
        SLUICEGATE_VAR_DIR=str(tmp_path / "var"),
    )
    command = [sys.executable, "-c", "from cli.main import main; main()", "serve"]
    command += ["--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not answers(url):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "sluicegate serve did not start"
            time.sleep(0.1)
        yield url, log
    finally:
        stop_group(process, timeout_s=30)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sluicegate_serve_answers_unparsable_requests_in_openai_shape_and_logs_no_query(
    served: tuple[str, Path],
) -> None:
    url, log = served
    for request in MALFORMED:
        assert_openai_400(raw_request(url, request))
    listed = httpx.get(f"{url}/v1/models", params={"api_key": SECRET, "x": "1"})
    assert listed.status_code == 401
    time.sleep(0.5)  # the access line is written as the response starts; let it flush
    output = log.read_text()
    assert '"GET /v1/models HTTP/1.1" 401' in output  # the access log is on, without the query
    assert SECRET not in output and "api_key" not in output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_h11_protocol_answers_the_same(app: FastAPI) -> None:
    """The fallback when httptools is not installed."""
    with serve_in_thread(app, http=JsonErrorsH11) as url:
        for request in MALFORMED:
            assert_openai_400(raw_request(url, request))


@pytest.mark.parametrize(
    ("length", "status"),
    [(b"abc", 400), (b"-1", 400), (b"1e3", 400), (b"9" * 5000, 413), (b"99999999999", 413)],
)
async def test_a_content_length_that_reaches_the_app_is_checked(
    app: FastAPI, length: bytes, status: int
) -> None:
    """Servers parse Content-Length before the app; if one ever passes a bad one through,
    the middleware still answers in OpenAI's shape (a 400: it is not a size)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": None,
        "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
    }  # fmt: skip
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == status
    error = json.loads(sent[1]["body"])["error"]  # type: ignore[arg-type]
    assert set(error) == {"message", "type", "param", "code"}
