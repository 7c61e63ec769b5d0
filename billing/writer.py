"""Group commit for ledger writes: concurrent requests share one transaction per batch.

Every caller still awaits its own write: `start` returns once the row is committed and
`finish` once the row and its rollup are committed, so the per-request guarantees of
billing/ledger.py hold; only the number of transactions (and fsyncs, and round trips for
BEGIN/COMMIT) goes down under load. A batch is written by a task of its own, so a caller
that is cancelled (a client that went away) does not cancel a write other requests wait on.
With `batching=False` each call is its own transaction (for measuring the difference).
(The rate limiter's `auth/ratelimit/batching.py` is the cheaper, cancellable variant.)

Faults stay with whoever caused them: a batch the database refuses for its data is retried
row by row, so a bad row fails its own request only; a batch that could not reach the
database fails its callers (their requests are not served as metered); and no error, of
the driver or of our own code, leaves a queued write waiting for a task that has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy.exc import SQLAlchemyError

from billing.ledger import LedgerBatch, LedgerWrite, RequestFinish, RequestProgress, RequestStart
from billing.stores import LedgerStore
from core.linger import Linger

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a failed write raises: the database is unreachable, restarting or refusing, or the
# driver lost track of its connection (asyncpg's InternalClientError: protocol state).
WRITE_ERRORS = (
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes of a database that answered and refused the data: 22 data exception
# (e.g. NUL in text), 23 integrity constraint violation. Anything else is an outage.
REFUSED_SQLSTATE_CLASSES = ("22", "23")


class LedgerWriteFailed(RuntimeError):
    """A write never reached the database; the caller's request must not be served as metered."""


class LedgerRowRefused(LedgerWriteFailed):
    """The database refused this row's data (the rest of its batch was written)."""


def refused(exc: BaseException) -> bool:
    """Did the database answer and refuse the data (rather than not answer at all)?"""
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(state, str) and state[:2] in REFUSED_SQLSTATE_CLASSES


def write_failure(exc: BaseException) -> LedgerWriteFailed:
    kind = LedgerRowRefused if refused(exc) else LedgerWriteFailed
    return kind(f"ledger write failed: {type(exc).__name__}: {exc}")


class _GroupCommit(Generic[Item, Result]):
    """Queue items; one writer task at a time flushes everything queued so far.

    `linger_s`: under load a batch waits this long for more writes first (`core.linger`).
    """

    def __init__(
        self,
        flush: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int,
        linger_s: float = 0.0,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._linger = Linger(linger_s)
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def enqueue(self, item: Item) -> asyncio.Future[Result]:
        """Queue `item`; the future resolves once its batch is written (or has failed).

        The writer task owns the write: cancelling the future cancels nothing else.
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return future

    async def submit(self, item: Item) -> Result:
        return await self.enqueue(item)

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._linger.wanted and len(self._pending) < self._max_batch:
                    await self._linger.wait()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._linger.sent(len(batch))
                await self._write(batch)
        except BaseException:  # cancelled or a bug: nobody queued may wait for a dead task
            pending, self._pending = self._pending, []
            _fail(pending, LedgerWriteFailed("the ledger writer stopped"))
            raise
        finally:
            self._task = None

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except WRITE_ERRORS as exc:
            if len(batch) > 1 and refused(exc):
                await self._row_by_row(batch)
            else:
                _fail(batch, write_failure(exc))
            return
        except BaseException as exc:  # cancelled or a bug: never leave a caller waiting forever
            _fail(batch, LedgerWriteFailed("ledger write did not complete"))
            if not isinstance(exc, Exception):
                raise
            # A bug of this batch is this batch's: the writer carries on for everyone else.
            log.exception("ledger batch failed unexpectedly", exc_info=exc)
            return
        self._deliver(batch, results)

    async def _row_by_row(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """The database refused the batch for some row's data: find it by writing each row
        alone (each write is idempotent, and the failed batch wrote nothing)."""
        for position, (item, future) in enumerate(batch):
            try:
                results = await self._flush([item])
            except WRITE_ERRORS as exc:
                if not refused(exc):  # the database went away meanwhile: stop knocking
                    _fail(batch[position:], write_failure(exc))
                    return
                _fail([(item, future)], write_failure(exc))
                continue
            self._deliver([(item, future)], results)

    def _deliver(
        self, batch: list[tuple[Item, asyncio.Future[Result]]], results: list[Result]
    ) -> None:
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def wait_idle(self) -> None:
        while self._task is not None:
            await asyncio.shield(self._task)


def _fail(batch: list[tuple[Item, asyncio.Future[Result]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


class LedgerWriter:
    """Writes started, checkpointed and finalised ledger rows for one gateway process.

    All three kinds share one queue: a batch carries the starts of new requests, the
    checkpoints of streams and the finishes of old requests together, in one transaction
    (half the commits of a queue per kind, and no two transactions of this process lock
    the same row, so none can deadlock another)."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        instance_id: str,
        batching: bool = True,
        max_batch: int = 256,
        linger_s: float = 0.0,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.batching = batching
        self._writes: _GroupCommit[LedgerWrite, bool] = _GroupCommit(
            self._write, max_batch=max_batch, linger_s=linger_s
        )
        self._tasks: set[asyncio.Future[Any]] = set()

    async def start(self, start: RequestStart) -> None:
        """Return once the started row is committed (idempotent on request_id)."""
        await self.start_soon(start)

    def start_soon(self, start: RequestStart) -> asyncio.Future[bool]:
        """Write the started row in the background; the future resolves once it is
        committed (or raises `LedgerWriteFailed`). A caller that stops waiting (`shield` it)
        does not stop the write."""
        if self.batching:
            return self._writes.enqueue(start)
        return asyncio.ensure_future(self._alone(start))

    async def finish(self, finish: RequestFinish) -> bool:
        """Return once finalised and rolled up; False if the row was not `started`."""
        if self.batching:
            return await self._writes.submit(finish)
        return await self._alone(finish)

    def checkpoint(self, progress: RequestProgress) -> None:
        """Queue a progress checkpoint; nobody waits for it, and a failed one is only logged
        (the next checkpoint, or the finish, carries the count again)."""
        self._writes.enqueue(progress).add_done_callback(_log_failed_checkpoint)

    async def _alone(self, write: LedgerWrite) -> bool:
        """One write as its own transaction and task, so a cancelled caller cannot cut it
        short (`batching=False`)."""
        task = asyncio.ensure_future(self._write([write]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return (await asyncio.shield(task))[0]
        except WRITE_ERRORS as exc:
            raise write_failure(exc) from exc

    async def _write(self, writes: Sequence[LedgerWrite]) -> list[bool]:
        """Write a batch; per write: True, but for a finish that did not finalise its row
        (already final, or a second finish of the same request in this batch)."""
        finalised = await self.store.write(LedgerBatch.of(writes), instance_id=self.instance_id)
        first_finish: dict[str, int] = {}
        results = []
        for i, write in enumerate(writes):
            if isinstance(write, RequestFinish):
                first = first_finish.setdefault(write.request_id, i) == i
                results.append(first and write.request_id in finalised)
            else:
                results.append(True)
        return results

    async def close(self) -> None:
        """Wait for queued writes, then close the store (called when the app shuts down)."""
        await self._writes.wait_idle()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.store.close()

    def stats(self) -> dict[str, int]:
        return {"batches": self._writes.batches, "writes": self._writes.items}


def _log_failed_checkpoint(future: asyncio.Future[bool]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a progress checkpoint was not written: %s", future.exception())
