"""`RemoteBackend` against misbehaving upstreams on a real socket: every failure is typed.

The upstream is a small aiohttp.web server whose routes each misbehave one way; what the
router and the gateway rely on is the exception class (`BackendBusy` may be retried
elsewhere, `InvalidRequest` never, `BackendError` ends the request with a 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web

from backends.base import (
    BackendBusy,
    BackendError,
    BackendEvent,
    BackendRequest,
    FinalUsage,
)
from backends.remote import RemoteBackend, SseDecoder
from core.errors import GenerationFailed, InvalidRequest
from inference.params import SamplingParams

CHUNK = {
    "id": "cmpl-1",
    "object": "text_completion",
    "choices": [{"index": 0, "text": "hi", "finish_reason": None, "logprobs": None}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
FINAL = {"id": "cmpl-1", "object": "text_completion", "choices": [], "usage": CHUNK["usage"]}


def _sse(*events: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


async def _error(status: int, request: web.Request) -> web.Response:
    body = {"error": {"message": f"upstream says {status}", "param": "max_tokens"}}
    return web.json_response(body, status=status)


async def _generation_failed(request: web.Request) -> web.Response:
    body = {"error": {"message": "the model failed on this request", "code": "generation_failed"}}
    return web.json_response(body, status=500)


async def _stream(request: web.Request, payload: bytes, pause_s: float = 0.0) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        await asyncio.sleep(pause_s)
        await response.write(payload)
        await response.write_eof()
    except ConnectionResetError:  # the client gave up waiting (the timeout test)
        pass
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def upstream_app() -> web.Application:
    app = web.Application()
    behaviours: dict[str, Handler] = {
        "ok": lambda r: _stream(r, _sse(CHUNK, FINAL) + b"data: [DONE]\n\n"),
        "bad-request": lambda r: _error(400, r),
        "busy": lambda r: _error(503, r),
        "rate-limited": lambda r: _error(429, r),
        "crash": lambda r: _error(500, r),
        "truncated": lambda r: _stream(r, _sse(CHUNK)),
        "garbage": lambda r: _stream(r, b"data: {not json\n\n"),
        "error-event": lambda r: _stream(r, _sse({"error": {"message": "engine died"}})),
        # The upstream's engine failed on this request only (it keeps serving the rest).
        "request-failed": _generation_failed,
        "request-failed-event": lambda r: _stream(
            r, _sse(CHUNK, {"error": {"message": "model failed", "code": "generation_failed"}})
        ),
        "slow": lambda r: _stream(r, _sse(CHUNK, FINAL) + b"data: [DONE]\n\n", pause_s=2.0),
    }
    # Streams still running when the client leaves; ours reports usage afterwards, the other
    # (like a stock `vllm serve`) has no such endpoint.
    behaviours["endless"] = behaviours["endless-vllm"] = lambda r: _stream(
        r, _sse(CHUNK) + b": still generating\n\n" * 2000, pause_s=0.0
    )
    for name, handler in behaviours.items():
        app.router.add_post(f"/{name}/v1/completions", _async(handler))
        app.router.add_get(f"/{name}/health", _healthy)
    app.router.add_get("/endless/usage/{request_id}", _usage_report)
    return app


async def _usage_report(request: web.Request) -> web.Response:
    body = {"request_id": request.match_info["request_id"], "completion_tokens": 9}
    return web.json_response(body)


def _async(handler: Handler) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    return route


async def _healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    runner = web.AppRunner(upstream_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _request() -> BackendRequest:
    return BackendRequest("req-1", [1, 2, 3], SamplingParams(max_tokens=1, temperature=0))


async def _run(backend: RemoteBackend) -> list[BackendEvent]:
    try:
        return [event async for event in backend.generate(_request())]
    finally:
        await backend.close()


async def test_a_complete_stream_becomes_deltas_then_usage(upstream: str) -> None:
    events = await _run(RemoteBackend(f"{upstream}/ok", model="m"))
    assert [type(e).__name__ for e in events] == ["GenerationDelta", "FinalUsage"]
    final = events[-1]
    assert isinstance(final, FinalUsage) and final.completion_tokens == 1


@pytest.mark.parametrize(
    ("route", "error", "message"),
    [
        ("bad-request", InvalidRequest, "upstream says 400"),
        ("busy", BackendBusy, "upstream 503"),
        ("rate-limited", BackendBusy, "upstream 429"),
        ("crash", BackendError, "upstream 500"),
        ("truncated", BackendError, "without [DONE]"),
        ("garbage", BackendError, "malformed event"),
        ("error-event", BackendError, "engine died"),
        # Not a backend failure: the router must neither eject the upstream nor retry.
        ("request-failed", GenerationFailed, "failed on this request"),
        ("request-failed-event", GenerationFailed, "model failed"),
    ],
)
async def test_upstream_failures_are_typed(
    upstream: str, route: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        await _run(RemoteBackend(f"{upstream}/{route}", model="m"))
    if isinstance(caught.value, InvalidRequest):
        assert caught.value.param == "max_tokens"  # the upstream's param is kept


async def test_a_stalled_upstream_times_out(upstream: str) -> None:
    backend = RemoteBackend(f"{upstream}/slow", model="m", read_timeout_s=0.3)
    with pytest.raises(BackendError, match="Timeout"):
        await _run(backend)


async def test_an_unreachable_upstream_is_a_backend_error() -> None:
    backend = RemoteBackend("http://127.0.0.1:9", model="m", name="nowhere")
    assert not await backend.check_health()
    with pytest.raises(BackendError, match="nowhere"):
        await _run(backend)


async def test_health_follows_the_upstream(upstream: str) -> None:
    backend = RemoteBackend(f"{upstream}/ok", model="m")
    try:
        assert await backend.check_health()
    finally:
        await backend.close()
    # a closed backend opens a new session on next use
    try:
        assert await backend.check_health()
    finally:
        await backend.close()


STREAM = (
    b": a comment\r\n"
    b"event: message\r\n"
    b'data: {"a":\r\n'
    b"data: 1}\r\n"
    b"\r\n"
    b"data:no-space\n\n"
    b"id: 7\n"
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_sse_decoder_gives_the_same_events_wherever_the_stream_is_cut(cut: int) -> None:
    decoder = SseDecoder()
    payloads = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) + decoder.close()
    assert payloads == [b'{"a":\n1}', b"no-space", b"[DONE]"]


def test_sse_decoder_byte_by_byte_and_an_unterminated_last_event() -> None:
    decoder = SseDecoder()
    payloads = [p for byte in STREAM[:-2] for p in decoder.feed(bytes([byte]))]
    assert payloads == [b'{"a":\n1}', b"no-space"]
    assert decoder.close() == [b"[DONE]"]
    assert decoder.close() == []


@pytest.mark.parametrize(
    ("name", "reported", "asks_again"),
    [
        ("endless", 9, True),
        ("endless-vllm", None, False),
    ],
)
async def test_an_abandoned_stream_asks_the_upstream_what_it_generated(
    upstream: str, name: str, reported: int | None, asks_again: bool
) -> None:
    backend = RemoteBackend(f"{upstream}/{name}", model="m")
    request = _request()
    try:
        stream = backend.generate(request)
        first = await anext(stream)  # the client reads one delta, then leaves
        assert first.completion_tokens == 1  # type: ignore[union-attr]
        await stream.aclose()
    finally:
        await backend.close()
    assert request.engine_completion_tokens == reported  # None: what was read stands
    assert backend.reports_usage is asks_again
