"""Connections that never send a whole request are closed; the number of open connections
is capped (issue #11, item 15: 200 idle sockets were still open after 65 s).

Through real sockets, on `sluicegate serve` as a real process (httptools) and on the h11
fallback protocol in a thread, with short limits from the settings.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.http_server import JsonErrorsH11, with_limits
from api.read_deadlines import ConnectionLimits, ReadDeadlines
from tests.gateway_process import sluicegate_serve
from tests.live import serve_in_thread

TIMEOUT_S = 2.0
SLACK_S = 3.0  # a loaded 2-core machine; the bug was "never"
CAP = 60
LIMITS = ConnectionLimits(header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S, max_connections=CAP)
HALF_REQUEST_LINE = b"GET /healthz HT"
BODY_HEAD = (
    b"POST /v1/waitlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n"
)
APPLICATION = json.dumps(
    {"email": "slow@example.com", "name": "Slow", "use_case": "Sending bodies slowly."}
).encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_until_closed(conn: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open at `deadline`."""
    answer = b""
    while True:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise AssertionError("the server left the connection open") from None
        except ConnectionResetError:
            return answer
        if not chunk:
            return answer
        answer += chunk


def status_and_error(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return int(head.split()[1]), error


def slow_heads_are_closed_while_others_are_served(url: str) -> None:
    began = time.monotonic()
    silent = [connect(url) for _ in range(5)]  # connect, send nothing
    halves = [connect(url) for _ in range(45)]  # half a request line
    for conn in halves:
        conn.sendall(HALF_REQUEST_LINE)
    trickle = connect(url)  # a byte of the head now and then does not extend the deadline
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # served meanwhile
    deadline = began + TIMEOUT_S + SLACK_S
    for piece in (b"GET ", b"/hea", b"lthz"):
        trickle.sendall(piece)
        time.sleep(0.6)
    for conn in [*silent, *halves, trickle]:
        with conn:
            status, error = status_and_error(read_until_closed(conn, deadline))
            assert (status, error["code"]) == (408, "request_timeout")
    assert time.monotonic() - began >= TIMEOUT_S - 0.2  # not before the deadline either


def stalled_bodies_are_closed_and_steady_ones_are_not(url: str) -> None:
    with connect(url) as stalled:
        stalled.sendall(BODY_HEAD % len(APPLICATION) + APPLICATION[:10])
        began = time.monotonic()
        answer = read_until_closed(stalled, began + TIMEOUT_S + SLACK_S)
        assert status_and_error(answer)[0] == 408
    with connect(url) as steady:  # pauses shorter than the body timeout, in total longer
        steady.sendall(BODY_HEAD % len(APPLICATION))
        for start in range(0, len(APPLICATION), len(APPLICATION) // 3 + 1):
            time.sleep(TIMEOUT_S * 0.6)
            steady.sendall(APPLICATION[start : start + len(APPLICATION) // 3 + 1])
        steady.settimeout(10)
        assert steady.recv(65536).startswith(b"HTTP/1.1 201 ")


def connections_past_the_cap_get_503(url: str) -> None:
    held = [connect(url) for _ in range(CAP)]
    try:
        with connect(url) as one_too_many:
            answer = read_until_closed(one_too_many, time.monotonic() + 5)
        status, error = status_and_error(answer)
        assert (status, error["code"]) == (503, "too_many_connections")
        assert b"\r\nretry-after: 1\r\n" in answer.lower()
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.5)  # the server sees them go
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sluicegate_serve_closes_slow_clients_and_caps_connections(
    migrated_db_url: str, admin_key: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": migrated_db_url,
        "SLUICEGATE_ADMIN_KEY": admin_key,
        "SLUICEGATE_VAR_DIR": str(tmp_path / "var"),
        "SLUICEGATE_HTTP_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "SLUICEGATE_HTTP_BODY_TIMEOUT_S": str(TIMEOUT_S),
        "SLUICEGATE_HTTP_MAX_CONNECTIONS": str(CAP),
        "SLUICEGATE_WAITLIST_PER_IP_PER_MINUTE": "0",
    }
    with sluicegate_serve(env, tmp_path / "serve.log") as gateway:
        slow_heads_are_closed_while_others_are_served(gateway.url)
        stalled_bodies_are_closed_and_steady_ones_are_not(gateway.url)
        connections_past_the_cap_get_503(gateway.url)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_h11_protocol_closes_slow_clients_too(app: FastAPI) -> None:
    with serve_in_thread(app, http=with_limits(LIMITS, JsonErrorsH11)) as url:
        slow_heads_are_closed_while_others_are_served(url)
        stalled_bodies_are_closed_and_steady_ones_are_not(url)
        connections_past_the_cap_get_503(url)


async def test_a_body_is_not_timed_out_while_the_server_itself_stopped_reading() -> None:
    """uvicorn stops reading past 64 KiB the app has not consumed yet: the client is not
    stalling then, so the body timer waits; once reading resumes, silence counts again."""
    paused = True
    expired: list[float] = []
    loop = asyncio.get_running_loop()
    limits = ConnectionLimits(header_timeout_s=0.05, body_timeout_s=0.05)
    deadlines = ReadDeadlines(
        loop, limits, expired=lambda: expired.append(loop.time()), reading_paused=lambda: paused
    )
    deadlines.head_started()
    deadlines.head_done()  # the head is in; the body is on its way
    await asyncio.sleep(0.3)
    assert expired == []  # six body timeouts passed, all while the server was not reading
    paused = False
    await asyncio.sleep(0.2)
    assert len(expired) == 1
    deadlines.head_started()  # a head is never excused: the server always reads heads
    paused = True
    await asyncio.sleep(0.2)
    assert len(expired) == 2
    deadlines.cancel()
