"""The ledger writer's linger: under load a batch waits a little for more writes; alone, never.

The store here records the batches it is given (what is tested is when the writer sends
them, not what the database does with them: tests/billing/test_ledger.py covers that).
"""

from __future__ import annotations

import asyncio
import time

from billing.ledger import LedgerBatch
from billing.writer import LedgerWriter
from tests.billing.conftest import a_start

PAIR = ("acct_linger", "key_linger")


class RecordingStore:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def write(self, batch: LedgerBatch, *, instance_id: str) -> set[str]:
        self.batches.append([s.request_id for s in batch.starts])
        await asyncio.sleep(0.001)  # a round trip
        return set()

    async def close(self) -> None:
        return None


async def test_a_lone_writer_never_lingers() -> None:
    store = RecordingStore()
    writer = LedgerWriter(store, instance_id="i", linger_s=0.5)
    began = time.perf_counter()
    for i in range(5):  # one request after the other: every batch holds one write
        await writer.start(a_start(f"req_{i}", PAIR))
    assert time.perf_counter() - began < 0.4  # not one linger of 0.5 s
    assert store.batches == [[f"req_{i}"] for i in range(5)]


async def test_under_load_a_batch_waits_for_the_writes_that_follow() -> None:
    store = RecordingStore()
    writer = LedgerWriter(store, instance_id="i", linger_s=0.1)
    await asyncio.gather(*(writer.start(a_start(f"req_{i}", PAIR)) for i in range(2)))
    assert store.batches == [["req_0", "req_1"]]  # two at once: other requests are writing

    async def later(request_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await writer.start(a_start(request_id, PAIR))

    # Without the linger, req_2 would go alone and req_3 (20 ms later) in a batch of its own.
    await asyncio.gather(later("req_2", 0.0), later("req_3", 0.02))
    assert store.batches[1:] == [["req_2", "req_3"]]
    await writer.start(a_start("req_4", PAIR))
    await writer.start(a_start("req_5", PAIR))  # the load has gone: no wait after a lone one
    assert store.batches[2:] == [["req_4"], ["req_5"]]
