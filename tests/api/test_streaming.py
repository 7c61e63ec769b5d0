"""`CancelOnDisconnect`: the lazily armed watcher that turns a client leaving into a cancel."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Message

from api.generation.streaming import CancelOnDisconnect, ClientDisconnected, until_disconnect


class Client:
    """An ASGI `receive` whose client leaves after `leaves_after_s` (never: None)."""

    def __init__(self, leaves_after_s: float | None) -> None:
        self.leaves_after_s = leaves_after_s
        self.calls = 0

    async def receive(self) -> Message:
        self.calls += 1
        if self.leaves_after_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.leaves_after_s)
        return {"type": "http.disconnect"}


async def work(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def test_quick_work_never_starts_a_watcher() -> None:
    client = Client(leaves_after_s=0.0)  # already gone, but the work ends before arming
    assert await until_disconnect(client.receive, work(0.0)) == "done"
    await asyncio.sleep(CancelOnDisconnect.arm_after_s * 1.5)
    assert client.calls == 0


async def test_long_work_is_cancelled_soon_after_the_client_leaves() -> None:
    client = Client(leaves_after_s=0.05)
    started = time.monotonic()
    with pytest.raises(ClientDisconnected):
        await until_disconnect(client.receive, work(10))
    elapsed = time.monotonic() - started
    assert elapsed < CancelOnDisconnect.arm_after_s + 0.05 + 0.5
    assert client.calls == 1
    # The caller's task is usable afterwards: the cancellation was consumed.
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)


async def test_long_work_with_the_client_present_completes_and_stops_watching() -> None:
    client = Client(leaves_after_s=None)
    before = len(asyncio.all_tasks())
    assert await until_disconnect(client.receive, work(CancelOnDisconnect.arm_after_s * 2)) == (
        "done"
    )
    assert client.calls == 1  # the watcher did start
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == before  # and is gone


async def test_an_outside_cancel_is_not_mistaken_for_a_disconnect() -> None:
    client = Client(leaves_after_s=None)
    task = asyncio.ensure_future(until_disconnect(client.receive, work(10)))
    await asyncio.sleep(CancelOnDisconnect.arm_after_s * 1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
