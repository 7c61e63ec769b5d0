"""The linger rule both group commits share (the limiter's and the ledger's).

While round trips carry two calls or more (other requests are calling too), the next one
waits `seconds` for company before it goes, like PostgreSQL's `commit_delay`: fewer round
trips, fewer wake-ups of the store and of the event loop. After a round trip that carried
one call, the next goes at once, so a request alone never waits.
"""

from __future__ import annotations

import asyncio


class Linger:
    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self._last_batch = 0  # calls in the last round trip: more than one means load

    def sent(self, calls: int) -> None:
        """Note a round trip of `calls` calls."""
        self._last_batch = calls

    @property
    def wanted(self) -> bool:
        return self.seconds > 0 and self._last_batch > 1

    async def wait(self) -> None:
        await asyncio.sleep(self.seconds)
