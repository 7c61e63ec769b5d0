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


# ---- linger: under load a round trip waits for company; a lone call never does -------------


async def test_a_lone_caller_never_lingers() -> None:
    store = Store()
    group = GroupCommit(store.run, linger_s=0.5)
    began = asyncio.get_running_loop().time()
    for i in range(5):  # one call after the other: every round trip holds one call
        assert await group.submit(i) == 2 * i
    assert asyncio.get_running_loop().time() - began < 0.4  # not one linger of 0.5 s
    assert store.batches == [[i] for i in range(5)]


async def later(group: GroupCommit[int, int], call: int, delay_s: float) -> int:
    await asyncio.sleep(delay_s)
    return await group.submit(call)


async def test_under_load_a_round_trip_waits_for_the_calls_that_follow() -> None:
    store = Store()
    group = GroupCommit(store.run, linger_s=0.1)
    assert await asyncio.gather(*(group.submit(i) for i in range(3))) == [0, 2, 4]
    assert store.batches == [[0], [1, 2]]  # two waited together: other requests are calling
    # Without the linger, 3 would go alone and 4 (30 ms later) in a round trip of its own.
    assert await asyncio.gather(later(group, 3, 0.0), later(group, 4, 0.03)) == [6, 8]
    assert store.batches[2:] == [[3, 4]]
    assert await group.submit(5) == 10 and await group.submit(6) == 12
    assert store.batches[3:] == [[5], [6]]  # the load has gone: no wait after a lone one


async def test_a_lingering_round_trip_that_fails_fails_its_callers_only() -> None:
    store = Store()
    group = GroupCommit(store.run, linger_s=0.05)
    await asyncio.gather(*(group.submit(i) for i in (1, 2, 3)))  # now under load
    bad, good = later(group, -1, 0.0), later(group, 4, 0.0)
    outcome = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(outcome[0], ConnectionError) and isinstance(outcome[1], ConnectionError)
    assert store.batches[-1] == [-1, 4]  # they shared the failed round trip
    assert await group.submit(7) == 14  # the group still works afterwards
