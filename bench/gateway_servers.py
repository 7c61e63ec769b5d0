"""The servers `bench/gateway.py` measures besides the gateway (uvicorn factories).

(a) `mock_app`: an OpenAI-compatible backend answering instantly with a fixed completion.
(c) `passthrough_app`: forwards the body to the mock with no checks, using aiohttp exactly as
the gateway's remote backend does: the ceiling of a Python gateway on the machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

TEXT = " Once upon a time there was a small gateway that forwarded every token."


def _fixed_bodies() -> tuple[bytes, bytes]:
    envelope = {"id": "cmpl-mock", "created": 0, "model": "tiny", "object": "text_completion"}
    use = {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}
    choice = {"index": 0, "text": TEXT, "logprobs": None, "finish_reason": "length"}
    whole = orjson.dumps({**envelope, "choices": [choice], "usage": use})
    chunk = orjson.dumps({**envelope, "choices": [choice], "usage": use})
    final = orjson.dumps({**envelope, "choices": [], "usage": use})
    stream = b"data: " + chunk + b"\n\ndata: " + final + b"\n\ndata: [DONE]\n\n"
    return whole, stream


def mock_app() -> FastAPI:
    """(a) An OpenAI-compatible backend that answers instantly with a fixed completion."""
    app = FastAPI()
    whole, stream = _fixed_bodies()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("stream"):
            return Response(stream, media_type="text/event-stream")
        return Response(whole, media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def passthrough_app() -> FastAPI:
    """(c) Forward the body to the mock, no checks: the ceiling of a Python gateway.

    Same HTTP client use as the gateway's remote backend: one pooled `aiohttp.ClientSession`,
    the response read as a stream.
    """
    target = os.environ["BENCH_MOCK_URL"] + "/v1/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=connector) as session:
            sessions.append(session)
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await request.body()
        headers = {"Content-Type": "application/json"}
        async with sessions[0].post(target, data=body, headers=headers) as upstream:
            chunks = [chunk async for chunk in upstream.content.iter_any()]
            return Response(b"".join(chunks), upstream.status, media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
