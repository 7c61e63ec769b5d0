"""One admitted request: run its generations, stream or collect them, count, settle once.

Settlement (`Admission.settle`, `Meter.settle`) happens exactly once whatever the ending:
success, a backend failure, or the client going away (then the status is `aborted`).

Backend failures. The router retries a generation whose backend fails before its first
event. A non-streamed request has delivered nothing even after many events, so when its
backend fails mid-way it runs once more from the start (the failed backend is ejected, so
another one serves it), and only that run counts; if no run succeeds, the client gets a 503
and the request is billed nothing. A stream that fails after its first chunk ends with an
error event. While a stream delivers, its progress is checkpointed on the ledger about every
`Meter.checkpoint_s`, which is what a gateway crash leaves to be billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive

from api.errors import SERVER_ERROR, error_body
from api.generation.hooks import (
    Admission,
    Meter,
    NoMeter,
    Outcome,
    OutcomeStatus,
    Ticket,
    Unlimited,
)
from api.generation.openai_render import DONE, sse, usage
from api.generation.planning import Plan
from api.generation.streaming import (
    ClientDisconnected,
    EventStreamResponse,
    merge,
    until_disconnect,
)
from backends.base import BackendError, BackendRequest, FinalUsage
from backends.catalog import ModelEntry
from backends.router import BackendRouter
from core.errors import BackendUnavailable, SluicegateError
from inference.outputs import GenerationDelta

JSON = "application/json"
log = logging.getLogger(__name__)


class InFlight:
    """Jobs admitted and not yet settled. At shutdown the app waits for them, so a stream
    cut by the drain deadline still settles its reservation and its ledger row before the
    limiter and the ledger writer close."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for every job to settle; returns how many have not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self.count


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    receive: Receive
    received_at: dt.datetime
    started: float  # time.perf_counter()
    # The request's ASGI state: what middleware reads back (api/request_log.py: the usage).
    notes: dict[str, Any]

    @classmethod
    def of(cls, request: Request) -> RequestContext:
        request_id = getattr(request.state, "request_id", None) or f"req_{os.urandom(12).hex()}"
        notes = request.scope.setdefault("state", {})
        return cls(request_id, request.receive, dt.datetime.now(dt.UTC), time.perf_counter(), notes)


class Job:
    """One admitted request: runs its generations, counts usage, settles once."""

    def __init__(
        self,
        meter: Meter,
        router: BackendRouter,
        entry: ModelEntry,
        ticket: Ticket,
        plan: Plan,
        admission: Admission,
        ctx: RequestContext,
        sequence: int,
        in_flight: InFlight | None = None,
    ):
        self.in_flight = in_flight
        if in_flight is not None:
            in_flight.enter()
        self.meter, self.router, self.entry = meter, router, entry
        self.ticket, self.plan = ticket, plan
        self.admission, self.ctx = admission, ctx
        tenant = ticket.caller.account_id
        self.requests = [
            BackendRequest(
                f"{ticket.request_id}.{sequence}.{i}",
                p.token_ids,
                plan.params,
                tenant=tenant,
                prompt_text=p.engine_text,
            )
            for i, p in enumerate(plan.prompts)
        ]
        self.final: dict[int, FinalUsage] = {}
        self.prompt_seen: dict[int, int] = {}
        self.completion_seen: dict[tuple[int, int], int] = {}
        self.first_token_at: dt.datetime | None = None
        self.delivered = False  # some of the response has been sent to the client
        self.finished = False
        self.headers = dict(admission.headers)
        self._next_checkpoint = time.monotonic() + meter.checkpoint_s

    # ---- generation ---------------------------------------------------------------------

    async def events(self) -> AsyncGenerator[tuple[int, GenerationDelta], None]:
        router, model = self.router, self.entry.id
        streams = [router.generate(model, request) for request in self.requests]
        if len(streams) == 1:  # the common case, without a merge (or a layer) in between
            async with aclosing(streams[0]) as only:
                async for event in only:
                    if (delta := self._count(0, event)) is not None:
                        yield 0, delta
            return
        async with aclosing(merge(streams)) as merged:
            async for position, event in merged:
                if (delta := self._count(position, event)) is not None:
                    yield position, delta

    def _count(self, position: int, event: GenerationDelta | FinalUsage) -> GenerationDelta | None:
        """Note the engine's counts an event carries; the delta, if it is one."""
        if isinstance(event, FinalUsage):
            self.final[position] = event
            return None
        if self.first_token_at is None:
            self.first_token_at = dt.datetime.now(dt.UTC)
        self.prompt_seen[position] = event.prompt_tokens
        self.completion_seen[position, event.index] = event.completion_tokens
        return event

    async def _collect(self) -> None:
        async with aclosing(self.events()) as events:
            async for position, delta in events:
                self.plan.renderer.add(position, delta)

    async def _collect_retried(self) -> None:
        """Collect; if the backend fails mid-way, once more from the start (see above)."""
        try:
            await self._collect()
        except BackendError as exc:
            log.info(
                "request %s: backend failed mid-way, running it again: %s", self.ctx.request_id, exc
            )
            self._restart()
            await self._collect()

    def _restart(self) -> None:
        self.plan.renderer.restart()
        self.final.clear()
        self.prompt_seen.clear()
        self.completion_seen.clear()
        self.first_token_at = None
        for request in self.requests:
            request.engine_completion_tokens = None

    async def complete(self) -> Response:
        status: OutcomeStatus = "error"
        code: str | None = None
        try:
            await until_disconnect(self.ctx.receive, self._collect_retried())
            status = "ok"
            self.delivered = True  # the body goes out right after the settle
        except ClientDisconnected:
            status = "aborted"
            return Response(status_code=499)  # nobody reads it; the client is gone
        except SluicegateError as exc:
            code = exc.code
            raise
        except BackendError as exc:
            code = BackendUnavailable.code
            raise _backend_failed(exc, self.ticket.request_id) from exc
        finally:
            await self.finish(status, code)
        body = self.plan.renderer.body(usage(*self.usage()))
        return Response(orjson.dumps(body), media_type=JSON, headers=self.headers)

    async def stream(self) -> Response:
        events = self.events()
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = None
        except SluicegateError as exc:
            await self.finish("error", exc.code)
            raise
        except BackendError as exc:
            await self.finish("error", BackendUnavailable.code)
            raise _backend_failed(exc, self.ticket.request_id) from exc
        except BaseException:
            await self.finish("aborted")
            raise
        return EventStreamResponse(self._frames(events, first), headers=self.headers)

    async def _frames(
        self,
        events: AsyncGenerator[tuple[int, GenerationDelta], None],
        first: tuple[int, GenerationDelta] | None,
    ) -> AsyncGenerator[bytes, None]:
        renderer = self.plan.renderer
        # Unless the loop completes or fails, the client went away (close or cancel).
        status: OutcomeStatus = "aborted"
        code: str | None = None
        try:
            async with aclosing(events):
                if first is not None and (frame := renderer.chunk(*first)):
                    self.delivered = True
                    yield frame
                async for position, delta in events:
                    if frame := renderer.chunk(position, delta):
                        self.delivered = True
                        yield frame
                        if time.monotonic() >= self._next_checkpoint:
                            self._checkpoint()
            status = "ok"
            # The ledger row is final before the last byte leaves (the `finally` is a no-op).
            await self.finish(status)
            if self.plan.include_usage:
                yield sse(renderer.envelope.wrap(renderer.object, [], usage(*self.usage())))
            yield DONE
        except (SluicegateError, BackendError) as exc:
            status = "error"
            if isinstance(exc, BackendError):
                exc = _backend_failed(exc, self.ticket.request_id)
            code = exc.code
            await self.finish(status, code)
            message = f"Generation failed: {exc.message}"
            yield sse(error_body(message, SERVER_ERROR, code=code))
        finally:
            await self.finish(status, code)

    # ---- accounting -----------------------------------------------------------------------

    def _checkpoint(self) -> None:
        """The completion tokens sent so far, for the ledger (billed if the gateway dies)."""
        self._next_checkpoint = time.monotonic() + self.meter.checkpoint_s
        if self.first_token_at is not None:
            sent = sum(self.completion_seen.values())
            self.meter.progress(self.ticket, sent, self.first_token_at)

    def usage(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens as the engines counted them."""
        prompt = completion = cached = 0
        for position in range(len(self.requests)):
            final = self.final.get(position)
            if final is not None:
                prompt += final.prompt_tokens
                completion += final.completion_tokens
                cached += final.cached_tokens
            else:  # interrupted: the engines' running counts so far
                prompt += self.prompt_seen.get(position, 0)
                seen = sum(n for (p, _), n in self.completion_seen.items() if p == position)
                # A local engine also reports tokens it generated that nobody read.
                reported = self.requests[position].engine_completion_tokens or 0
                completion += max(seen, reported)
        return prompt, completion, cached

    async def finish(self, status: OutcomeStatus, code: str | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            await self._settle(status, code)
        finally:
            if self.in_flight is not None:
                self.in_flight.leave()

    async def _settle(self, status: OutcomeStatus, code: str | None) -> None:
        prompt, completion, cached = self.usage()
        outcome = Outcome(
            status=status,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            finished_at=dt.datetime.now(dt.UTC),
            first_token_at=self.first_token_at,
            latency_ms=int((time.perf_counter() - self.ctx.started) * 1000),
            backend=self.requests[0].served_by,
            error_code=code,
            delivered=self.delivered,
        )
        self.ctx.notes["usage"] = (self.ticket.model, prompt, completion)
        if isinstance(self.admission, Unlimited) or isinstance(self.meter, NoMeter):
            await self.admission.settle(outcome)  # at most one real store: no tasks needed
            await self.meter.settle(self.ticket, outcome)
            return
        # The limiter (Redis) and the ledger (the database) settle at once: the response
        # waits for one round trip instead of two. The ledger's runs as a task, started
        # first, so a cancellation can neither keep it from starting nor cut it short; the
        # limiter's runs here (one task per request, not two and a gather).
        metered = asyncio.ensure_future(self.meter.settle(self.ticket, outcome))
        await self.admission.settle(outcome)
        await metered


def _backend_failed(exc: BackendError, request_id: str) -> BackendUnavailable:
    """The client's view of a backend failure; the details (hosts, errors) only go to the log."""
    log.warning("request %s: backend failed: %s", request_id, exc)
    return BackendUnavailable(
        "The model backend failed while handling this request; the response is incomplete. "
        "Retrying may succeed."
    )
