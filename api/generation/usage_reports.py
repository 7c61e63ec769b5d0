"""The inference server's account of what each request used, for a gateway that left early.

When a gateway's client hangs up mid-stream, the gateway closes its upstream connection, and
the engine generates a few more tokens before it notices: tokens the gateway never read,
but which were generated at the client's request. This meter (the inference server's
`Meter`) keeps each request's final counts for a little while after it ends, and
`GET /usage/{request_id}` hands them out, waiting briefly for a request that is still
winding down. The gateway's remote backend asks after every stream it abandoned, so an
aborted request is billed what the engine generated (a stock `vllm serve` has no such
endpoint: there the gateway bills what it read).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import OrderedDict
from dataclasses import dataclass

from api.generation.hooks import Outcome, Ticket
from core.errors import NotFound

KEEP_LAST = 10_000  # finished requests remembered; the gateway asks within a second


@dataclass(frozen=True, slots=True)
class UsageReport:
    request_id: str
    status: str
    prompt_tokens: int
    completion_tokens: int


class UsageReports:
    """A `Meter` that records nothing durable: final counts of recent requests, in memory."""

    checkpoint_s = math.inf

    def __init__(self, keep_last: int = KEEP_LAST) -> None:
        self._keep_last = keep_last
        self._running: dict[str, asyncio.Future[UsageReport]] = {}
        self._finished: OrderedDict[str, UsageReport] = OrderedDict()

    async def record(self, ticket: Ticket) -> None:
        future = asyncio.get_running_loop().create_future()
        self._running.setdefault(ticket.request_id, future)

    def progress(self, ticket: Ticket, completion_tokens: int, first_token_at: dt.datetime) -> None:
        return None

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        report = UsageReport(
            ticket.request_id, outcome.status, outcome.prompt_tokens, outcome.completion_tokens
        )
        self._finished[report.request_id] = report
        while len(self._finished) > self._keep_last:
            self._finished.popitem(last=False)
        running = self._running.pop(ticket.request_id, None)
        if running is not None and not running.done():
            running.set_result(report)

    async def report(self, request_id: str, *, wait_s: float) -> UsageReport:
        """The final counts of `request_id`, waiting up to `wait_s` for it to end."""
        finished = self._finished.get(request_id)
        if finished is not None:
            return finished
        running = self._running.get(request_id)
        if running is not None:
            try:
                async with asyncio.timeout(wait_s):
                    return await asyncio.shield(running)
            except TimeoutError:
                pass
        raise NotFound(f"No finished request {request_id!r} is known here.")
