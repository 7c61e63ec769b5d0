"""Finishes whose write failed because the database did not answer, retried until they land.

A request that was served must be billed: if the final ledger write fails during a
database blip, the client already has its answer, and the row would otherwise stay
`started` on a live process for hours (the sweeper settles only rows of dead processes),
then be settled as `interrupted` without its completion tokens. So the finish is kept in
memory and written again, with backoff, until the database takes it. Writing a finish is
idempotent (`WHERE status = 'started'`), so a retry can never bill twice; a row the sweeper
settled meanwhile simply stays as the sweeper left it.

What is lost if the process dies before the database returns: only what was pending here,
and those rows are settled by the sweeper like every other row of a dead process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from billing.ledger import RequestFinish
from billing.writer import LedgerRowRefused, LedgerWriteFailed

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


class Redelivery:
    """Pending finishes and the task retrying them (one per gateway process)."""

    def __init__(
        self,
        write: Callable[[RequestFinish], Awaitable[bool]],
        *,
        first_delay_s: float = FIRST_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self._write = write
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._pending: dict[str, RequestFinish] = {}
        self._task: asyncio.Task[None] | None = None
        self.landed = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, finish: RequestFinish) -> None:
        self._pending.setdefault(finish.request_id, finish)  # the first outcome is the one
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-redelivery")

    async def _run(self) -> None:
        delay = self._first_delay_s
        try:
            while self._pending:
                await asyncio.sleep(delay)
                landed = await self._round()
                delay = self._first_delay_s if landed else min(delay * 2, self._max_delay_s)
        finally:
            self._task = None

    async def _round(self) -> int:
        """Write every pending finish once (they share batches); returns how many landed."""
        batch = list(self._pending.values())
        results = await asyncio.gather(*(self._write(f) for f in batch), return_exceptions=True)
        landed = 0
        for finish, result in zip(batch, results, strict=True):
            if isinstance(result, LedgerRowRefused):
                log.error(
                    "ledger row %s refused; the sweeper settles it: %s", finish.request_id, result
                )
            elif isinstance(result, LedgerWriteFailed):
                continue  # still unreachable: next round
            elif isinstance(result, BaseException):
                raise result
            else:
                landed += 1
            del self._pending[finish.request_id]
        self.landed += landed
        if landed:
            log.info("%d delayed ledger finishes written, %d pending", landed, self.pending)
        return landed

    async def flush(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for everything pending to land; returns how many did not."""
        task = self._task
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending:
            log.error("%d ledger finishes never landed; the sweeper settles them", self.pending)
        return self.pending
