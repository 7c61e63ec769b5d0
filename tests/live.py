"""Running an ASGI app on a real uvicorn socket in a background thread (for SDK/E2E tests)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

STARTUP_TIMEOUT_S = 30.0


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, host: str = "127.0.0.1", http: type[asyncio.Protocol] | str = "auto"
) -> Iterator[str]:
    """Serve `app` (lifespan included) on a free port; yields its base URL, e.g.
    `http://127.0.0.1:54321`. Logging is left to the test (log_config=None), so the access
    log reaches pytest's caplog. `http`: uvicorn's protocol (a name or a class)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=True, loop="asyncio", http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)
        sock.close()
