"""The servers `bench/gateway.py` measures besides the gateway (uvicorn factories).

(a) `mock_app`: an OpenAI-compatible backend answering instantly with a fixed completion.
(c) `passthrough_app`: forwards the body to the mock with no checks, using httpx exactly as
the gateway's remote backend does: the ceiling of a Python gateway on the machine.
"""

from __future__ import annotations

import os

import httpx
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

    Same HTTP client use as the gateway's remote backend: httpx's connection pool
    (`AsyncHTTPTransport`) called directly.
    """
    target = httpx.URL(os.environ["BENCH_MOCK_URL"] + "/v1/completions")
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=512))
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        upstream = await transport.handle_async_request(
            httpx.Request(
                "POST",
                target,
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        )
        stream = upstream.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in stream])
        await upstream.aclose()
        return Response(body, upstream.status_code, media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
