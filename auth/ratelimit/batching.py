"""Group commit: concurrent calls to a store share one round trip.

While one batch is in flight, new calls gather; the next batch takes all of them. Alone, a
call goes out at once (no added wait); under load, the per-call cost of a round trip (client
CPU, packing, parsing) is shared by everyone in the batch. With `linger_s`, under load a
call that finds nothing in flight waits that long for company first (`core.linger`).

The ledger has a group commit of its own (`billing/writer.py`) with the opposite trade-off:
there a write must survive its caller's cancellation, so every batch runs in a task of its
own; here a lone call runs in the caller's task, saving a scheduling hop on every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from core.linger import Linger

C = TypeVar("C")
R = TypeVar("R")


class GroupCommit(Generic[C, R]):
    """`fail_fast`: errors that say the store is unreachable. When a round trip fails with
    one, the calls that gathered meanwhile fail with it at once instead of each waiting for
    a round trip of their own to time out (a hung store then costs a caller one timeout)."""

    def __init__(
        self,
        run: Callable[[Sequence[C]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 64,
        fail_fast: tuple[type[Exception], ...] = (),
        linger_s: float = 0.0,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._fail_fast = fail_fast
        self._linger = Linger(linger_s)
        self._pending: list[tuple[C, asyncio.Future[R]]] = []
        self._in_flight = False  # a round trip is under way (a caller's own, or the flusher's)
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, call: C) -> R:
        if self._in_flight:
            return await self._queue(call)
        self._in_flight = True
        if self._linger.wanted:
            # Under load: wait for company, in a flusher task (see the module's doc).
            future = self._queue(call)
            self._flusher = asyncio.create_task(self._flush(linger=True))
            return await future
        # Nothing under way: go now, from the caller's own task (no extra scheduling hop).
        self._linger.sent(1)
        try:
            [result] = await self._run([call])
        except self._fail_fast as exc:
            self._fail_pending(exc)
            raise
        finally:
            self._hand_over()
        return result

    def _queue(self, call: C) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        return future

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(exc)

    def _hand_over(self) -> None:
        """Calls that gathered meanwhile go out together, from a flusher task."""
        if self._pending:
            self._flusher = asyncio.create_task(self._flush())
        else:
            self._in_flight = False

    async def _flush(self, *, linger: bool = False) -> None:
        try:
            if linger:
                await self._linger.wait()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._linger.sent(len(batch))
                await self._run_batch(batch)
        except BaseException:  # cancelled: nobody queued may wait for a flusher that has gone
            pending, self._pending = self._pending, []
            for _, future in pending:
                future.cancel()
            raise
        finally:
            self._in_flight = False

    async def _run_batch(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([call for call, _ in batch])
        except BaseException as exc:  # handed to every caller waiting on this batch
            for _, future in batch:
                if not future.done():  # a caller that gave up has a cancelled future
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, self._fail_fast):
                self._fail_pending(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
