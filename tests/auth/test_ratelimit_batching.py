"""Group commit: overlapping calls share one round trip, and every caller gets its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from auth.ratelimit.batching import GroupCommit


class Store:
    """Doubles each number after a short 'round trip'; fails a batch containing -1."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def run(self, calls: Sequence[int]) -> list[int]:
        self.batches.append(list(calls))
        await asyncio.sleep(0.01)
        if -1 in calls:
            raise ConnectionError("store down")
        return [2 * c for c in calls]


async def test_a_lone_call_goes_out_at_once() -> None:
    store = Store()
    group = GroupCommit(store.run)
    assert await group.submit(3) == 6
    assert await group.submit(4) == 8
    assert store.batches == [[3], [4]]


async def test_overlapping_calls_share_round_trips() -> None:
    store = Store()
    group = GroupCommit(store.run, max_batch=16)
    results = await asyncio.gather(*(group.submit(i) for i in range(50)))
    assert results == [2 * i for i in range(50)]
    assert sorted(c for batch in store.batches for c in batch) == list(range(50))
    assert store.batches[0] == [0]  # the first goes alone, the rest gathered behind it
    assert len(store.batches) == 1 + 4  # 49 waiting calls in batches of at most 16
    assert all(len(batch) <= 16 for batch in store.batches)


async def test_a_failed_batch_fails_each_of_its_callers_only() -> None:
    store = Store()
    group = GroupCommit(store.run)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(c)) for c in (-1, 5)]
    assert await first == 2
    for task in rest:
        with pytest.raises(ConnectionError):
            await task
    assert await group.submit(7) == 14  # the group still works afterwards


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    store = Store()
    group = GroupCommit(store.run)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    quitter = asyncio.ensure_future(group.submit(2))
    stayer = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    quitter.cancel()
    assert (await first, await stayer) == (2, 6)
    assert store.batches == [[1], [2, 3]]  # its call still went out with the batch


async def test_an_unreachable_store_fails_the_calls_waiting_behind_at_once() -> None:
    store = Store()
    group = GroupCommit(store.run, max_batch=2, fail_fast=(ConnectionError,))
    down = asyncio.ensure_future(group.submit(-1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(group.submit(c)) for c in range(5)]
    for call in (down, *waiting):
        with pytest.raises(ConnectionError):
            await call
    assert store.batches == [[-1]]  # nobody else waited for a round trip of their own
    assert await group.submit(7) == 14


async def test_calls_behind_a_failed_flush_fail_with_it() -> None:
    store = Store()
    group = GroupCommit(store.run, max_batch=2, fail_fast=(ConnectionError,))
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    behind = [asyncio.ensure_future(group.submit(c)) for c in (-1, 2, 3, 4)]
    assert await first == 2
    for call in behind:
        with pytest.raises(ConnectionError):
            await call
    assert store.batches == [[1], [-1, 2]]
