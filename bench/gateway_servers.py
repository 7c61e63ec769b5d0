"""The servers `bench/gateway.py` measures besides the gateway (uvicorn factories).

(a) `mock_app`: an OpenAI-compatible upstream answering both generation routes instantly
with a fixed completion (streamed too: the gateway's remote backend always streams).
(c) `passthrough_app`: forwards the body of either route to the mock with no checks, using
aiohttp exactly as the gateway's remote backend does: the ceiling of a Python gateway on
the machine.
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
ROUTES = ("/v1/completions", "/v1/chat/completions")
USAGE = {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}


def _sse(*chunks: dict[str, object]) -> bytes:
    events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


def _completion_bodies() -> tuple[bytes, bytes]:
    envelope = {"id": "cmpl-mock", "created": 0, "model": "tiny", "object": "text_completion"}
    choice = {"index": 0, "text": TEXT, "logprobs": None, "finish_reason": "length"}
    whole = {**envelope, "choices": [choice], "usage": USAGE}
    final = {**envelope, "choices": [], "usage": USAGE}
    return orjson.dumps(whole), _sse(whole, final)


def _chat_bodies() -> tuple[bytes, bytes]:
    envelope = {"id": "chatcmpl-mock", "created": 0, "model": "tiny"}
    message = {"role": "assistant", "content": TEXT}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}
    whole = {**envelope, "object": "chat.completion", "choices": [choice], "usage": USAGE}
    delta = {"index": 0, "delta": message, "logprobs": None, "finish_reason": "length"}
    chunk = {**envelope, "object": "chat.completion.chunk", "choices": [delta], "usage": None}
    final = {**envelope, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
    return orjson.dumps(whole), _sse(chunk, final)


def mock_app() -> FastAPI:
    """(a) An OpenAI-compatible upstream that answers instantly with a fixed completion."""
    app = FastAPI()
    bodies = {"/v1/completions": _completion_bodies(), "/v1/chat/completions": _chat_bodies()}

    async def generate(request: Request) -> Response:
        whole, stream = bodies[request.scope["path"]]
        if orjson.loads(await request.body()).get("stream"):
            return Response(stream, media_type="text/event-stream")
        return Response(whole, media_type="application/json")

    for path in ROUTES:
        app.add_api_route(path, generate, methods=["POST"])

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def passthrough_app() -> FastAPI:
    """(c) Forward the body to the mock's same route, no checks: the ceiling of a gateway.

    Same HTTP client use as the gateway's remote backend: one pooled `aiohttp.ClientSession`,
    the response read as a stream.
    """
    upstream = os.environ["BENCH_MOCK_URL"]
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=512)
        async with aiohttp.ClientSession(connector=connector) as session:
            sessions.append(session)
            yield

    app = FastAPI(lifespan=lifespan)

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {"Content-Type": "application/json"}
        url = upstream + request.scope["path"]
        async with sessions[0].post(url, data=body, headers=headers) as answer:
            chunks = [chunk async for chunk in answer.content.iter_any()]
            return Response(b"".join(chunks), answer.status, media_type="application/json")

    for path in ROUTES:
        app.add_api_route(path, forward, methods=["POST"])

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
