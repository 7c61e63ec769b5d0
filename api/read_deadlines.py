"""How long a connection may take to send its request, and how many may be open at once.

uvicorn arms one timer of its own: keep-alive, between a response and the next request.
A client that connects and sends nothing, or half a request line, or headers and then a
trickle of body (slowloris), holds its socket (and the file descriptor, and a slot of the
load balancer in front) forever. `ReadDeadlines` is the missing timer, driven by the
protocol (api/http_server.py) at four points of a request:

- `head_started` (connected, or the first byte of the next request): the whole head must
  arrive within `header_timeout_s`. A deadline, not an idle timeout: a byte a second does
  not extend it.
- `head_done` / `body_arrived`: between two pieces of the body at most `body_timeout_s`
  pass (an idle timeout: a large body on a slow link is fine, a stalled one is not). While
  the server itself stopped reading (the app has not consumed what it buffered), the
  client is not to blame: the timer waits.
- `body_done`: the request is in; the app's own time is not limited here.

On expiry the protocol answers 408 in OpenAI's shape (if nothing was sent yet) and closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1000  # per process; the newest connection past it gets a 503


class ReadDeadlines:
    """One connection's read timer (see the module's docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: ConnectionLimits,
        *,
        expired: Callable[[], None],
        reading_paused: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._limits = limits
        self._expired = expired
        self._reading_paused = reading_paused
        self._timer: asyncio.TimerHandle | None = None
        self._reading_head = False

    def head_started(self) -> None:
        if not self._reading_head:  # the deadline runs from the first byte on, once
            self._reading_head = True
            self._arm(self._limits.header_timeout_s)

    def head_done(self) -> None:
        self._reading_head = False
        self.body_arrived()

    def body_arrived(self) -> None:
        self._arm(self._limits.body_timeout_s)

    def body_done(self) -> None:
        self._reading_head = False
        self.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, seconds: float) -> None:
        self.cancel()
        self._timer = self._loop.call_later(seconds, self._fire, seconds)

    def _fire(self, seconds: float) -> None:
        self._timer = None
        if self._reading_paused() and not self._reading_head:
            self._arm(seconds)  # we stopped reading, not the client: wait on
            return
        self._reading_head = False
        self._expired()
