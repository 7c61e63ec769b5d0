"""Client-disconnect handling and the SSE response.

Starlette notices a vanished client only when it next writes, and with a request queued in
the engine that may be many seconds away. Here a watcher task waits for the ASGI
`http.disconnect` message and cancels the work, so the engine aborts the request at its
next step and the pipeline settles it as aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from contextlib import aclosing, suppress
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was complete."""


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class CancelOnDisconnect:
    """`async with CancelOnDisconnect(receive):` cancels the enclosed work if the client
    leaves, and turns that cancellation into `ClientDisconnected`.

    The work keeps running in the current task (a watcher task cancels it), which is
    cheaper on the hot path than running it in a task of its own and waiting for either.
    The watcher starts only once the work has run for `arm_after_s`: most requests are
    done sooner and never pay for a task, and a client that leaves is still noticed within
    that delay (plus an engine step, for the abort to take effect).
    """

    arm_after_s = 0.1

    def __init__(self, receive: Receive):
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Future[None] | None = None
        self._active = False
        self.disconnected = False

    async def __aenter__(self) -> CancelOnDisconnect:
        self._task = asyncio.current_task()
        self._active = True
        self._timer = asyncio.get_running_loop().call_later(self.arm_after_s, self._arm)
        return self

    def _arm(self) -> None:
        if self._active:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await wait_for_disconnect(self._receive)
        if self._active and self._task is not None:
            self.disconnected = True
            self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        self._active = False  # from here on a disconnect no longer cancels anything
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self.disconnected and kind is asyncio.CancelledError and self._task is not None:
            self._task.uncancel()  # our own cancellation, consumed here
            raise ClientDisconnected
        return False


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """`await work`, cancelled (and `ClientDisconnected` raised) if the client leaves."""
    async with CancelOnDisconnect(receive):
        return await work
    raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises


class EventStreamResponse(Response):
    """`text/event-stream` from an async iterator of ready-made SSE frames.

    Each frame is sent as soon as it is produced (no buffering). A disconnect cancels the
    producer; either way the iterator is closed, so its `finally` blocks (abort, settle) run.
    """

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None
    ):
        self.frames = frames
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A vanished client: nothing more to send, and nobody to tell.
        with suppress(ClientDisconnected, OSError):
            async with CancelOnDisconnect(receive), aclosing(self.frames):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async for frame in self.frames:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def merge(
    streams: Sequence[AsyncGenerator[T, None]],
) -> AsyncGenerator[tuple[int, T], None]:
    """Items of several streams as they come, tagged with their stream's position.

    The first stream to fail ends the merge with its error; closing the merge cancels the
    rest (each stream's own cleanup then runs).
    """
    queue: asyncio.Queue[tuple[int, T | None]] = asyncio.Queue()

    async def pump(position: int, stream: AsyncGenerator[T, None]) -> None:
        try:
            async with aclosing(stream):
                async for item in stream:
                    queue.put_nowait((position, item))
        finally:
            # None marks the end; the task is done (with its error, if any) when it is read.
            queue.put_nowait((position, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            position, item = await queue.get()
            if item is not None:
                yield position, item
                continue
            remaining -= 1
            task = tasks[position]
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
