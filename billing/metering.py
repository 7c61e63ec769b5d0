"""The gateway's metering hook, backed by the ledger.

`LedgerMeter` satisfies `api.generation.hooks.Meter` structurally (billing imports nothing
from api): `record` writes the started row before generation and raises if it cannot (a request that
cannot be metered is not served); `settle` finalises it and never raises (a row it could not
finalise stays `started` and the sweeper settles it as `interrupted`).

What is billed (the README's billing table states the same rules for clients):
- `ok`: the engine's prompt and completion counts, i.e. exactly the `usage` the client got;
- `aborted` (client went away) and `error` after something was delivered: the prompt as
  tokenized at admission (the engine may not have reported it yet) and the completion
  tokens the engine actually generated;
- `error` with nothing delivered (the backends failed before the client got a byte): 0;
- a request stopped while its row was being written (`metering_failed`: nothing ran): 0;
- `interrupted` (its gateway died; `sweeper`): the tokens of its last progress checkpoint.
  A stream is checkpointed every `checkpoint_s` while it delivers (`progress`), batched
  through the writer like every other write; a row with no checkpoint is billed nothing.

A finish that fails because the database did not answer is retried until it lands
(`billing/redelivery.py`); one the database refuses stays `started` for the sweeper.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Protocol

from billing.ledger import RequestFinish, RequestProgress, RequestStart
from billing.models import Status
from billing.redelivery import Redelivery
from billing.writer import LedgerRowRefused, LedgerWriteFailed, LedgerWriter
from core.errors import BackendUnavailable

log = logging.getLogger(__name__)

STATUSES = {"ok": Status.OK, "error": Status.ERROR, "aborted": Status.ABORTED}
# The pipeline's code for a request it stopped because `record` failed or was cancelled.
METERING_FAILED = "metering_failed"
USER_MAX = 256  # ledger.user


class MeteredCaller(Protocol):
    @property
    def account_id(self) -> str: ...

    @property
    def key_id(self) -> str: ...


class MeteredRequest(Protocol):
    """What `record` needs of the gateway's ticket."""

    @property
    def request_id(self) -> str: ...

    @property
    def caller(self) -> MeteredCaller: ...

    @property
    def model(self) -> str: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def user(self) -> str | None: ...

    @property
    def received_at(self) -> dt.datetime: ...


class MeteredOutcome(Protocol):
    """What `settle` needs of the gateway's outcome."""

    @property
    def status(self) -> str: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def cached_tokens(self) -> int: ...

    @property
    def finished_at(self) -> dt.datetime: ...

    @property
    def first_token_at(self) -> dt.datetime | None: ...

    @property
    def latency_ms(self) -> int: ...

    @property
    def backend(self) -> str | None: ...

    @property
    def error_code(self) -> str | None: ...

    @property
    def delivered(self) -> bool: ...


def new_ledger_id() -> str:
    return f"req_{os.urandom(12).hex()}"


class LedgerMeter:
    """One per gateway process; `writer` carries its instance id."""

    def __init__(self, writer: LedgerWriter, *, checkpoint_s: float = 1.0) -> None:
        if checkpoint_s <= 0:
            raise ValueError("checkpoint_s must be positive")
        self.writer = writer
        self.checkpoint_s = checkpoint_s  # how often a delivering stream records progress
        self.redelivery = Redelivery(writer.finish)
        # Per in-flight ticket (keyed by identity: the same object reaches settle): its
        # ledger id and the write of its started row.
        self._open: dict[int, tuple[str, asyncio.Future[bool]]] = {}

    async def record(self, ticket: MeteredRequest) -> None:
        ledger_id = new_ledger_id()
        start = RequestStart(
            request_id=ledger_id,
            account_id=ticket.caller.account_id,
            key_id=ticket.caller.key_id,
            model=ticket.model,
            prompt_tokens=ticket.prompt_tokens,
            received_at=ticket.received_at,
            # The column holds 256 characters; a longer `user` must not cost the request.
            user=ticket.user[:USER_MAX] if ticket.user else None,
            client_request_id=ticket.request_id,
        )
        # Written by the writer's own task: a caller cancelled mid-write (the client left)
        # does not cut the insert short, and `settle` waits for it, so a finish never
        # overtakes its start.
        written = self.writer.start_soon(start)
        self._open[id(ticket)] = (ledger_id, written)
        try:
            await asyncio.shield(written)
        except LedgerWriteFailed as exc:
            self._open.pop(id(ticket), None)
            log.error("usage ledger unavailable: %s", exc)
            raise BackendUnavailable(
                "Usage metering is unavailable, so the request was not served. Retry shortly."
            ) from exc

    async def settle(self, ticket: MeteredRequest, outcome: MeteredOutcome) -> None:
        opened = self._open.pop(id(ticket), None)
        if opened is None:  # never recorded (record failed): nothing to finalise
            return
        ledger_id, written = opened
        try:
            # Done long since, as a rule (`record` waited for it): no shield needed then.
            await (written if written.done() else asyncio.shield(written))
        except LedgerWriteFailed:
            return  # no row was written: nothing to finalise
        status = STATUSES.get(outcome.status, Status.ERROR)
        prompt, completion = outcome.prompt_tokens, outcome.completion_tokens
        if status is Status.ERROR and not outcome.delivered:
            # Nothing reached the client (nothing ran, when `metering_failed`): not billed.
            prompt = completion = 0
        elif status is not Status.OK:
            prompt = max(prompt, ticket.prompt_tokens)
        finish = RequestFinish(
            request_id=ledger_id,
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=outcome.cached_tokens,
            finished_at=outcome.finished_at,
            first_token_at=outcome.first_token_at,
            latency_ms=outcome.latency_ms,
            backend=outcome.backend,
        )
        try:
            await self.writer.finish(finish)
        except LedgerRowRefused as exc:
            log.error("ledger row %s refused, left started for the sweeper: %s", ledger_id, exc)
        except LedgerWriteFailed as exc:
            log.warning("ledger row %s not finalised (%s); retrying until it lands", ledger_id, exc)
            self.redelivery.add(finish)

    def progress(
        self, ticket: MeteredRequest, completion_tokens: int, first_token_at: dt.datetime
    ) -> None:
        """Checkpoint a stream's delivered tokens (queued; never waits, never raises)."""
        opened = self._open.get(id(ticket))
        written = opened[1] if opened is not None else None
        if written is None or not written.done() or written.cancelled() or written.exception():
            return  # no started row (yet): nothing to checkpoint
        assert opened is not None
        self.writer.checkpoint(
            RequestProgress(opened[0], max(0, completion_tokens), first_token_at)
        )

    async def flush(self, timeout_s: float) -> int:
        """At shutdown: wait for delayed finishes to land; returns how many did not."""
        return await self.redelivery.flush(timeout_s)

    @property
    def in_flight(self) -> int:
        return len(self._open)
