"""The seams where admission control (rate limits) and metering (ledger) join a request.

The pipeline in `api/generation/service.py` calls, in order: `Admitter.admit(ticket)` (may raise
`RateLimited` / `QuotaExceeded`), `Meter.record(ticket)`, generation, then exactly once
`Admission.settle(outcome)` and `Meter.settle(ticket, outcome)`, also when the client went
away or generation failed. While a stream delivers, `Meter.progress` is called about every
`Meter.checkpoint_s` with the completion tokens sent so far. The defaults do nothing, so the
API works without limits or billing; `auth.ratelimit` and `billing` provide real ones and
set them on `GenerationService.admitter` / `.meter` in the app's lifespan.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

Endpoint = Literal["completions", "chat.completions"]
OutcomeStatus = Literal["ok", "error", "aborted"]  # the ledger's final statuses


class Caller(Protocol):
    """Who is asking (an authenticated API key; `auth.keys.Principal` satisfies this)."""

    @property
    def account_id(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    def may_use(self, model: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Ticket:
    """A validated, tokenized request about to be admitted."""

    request_id: str
    caller: Caller
    model: str
    endpoint: Endpoint
    prompt_tokens: int  # summed over all prompts
    max_tokens: int  # per completion
    completions: int  # sequences generated: prompts x (best_of or n)
    stream: bool
    user: str | None
    received_at: dt.datetime

    @property
    def reserved_tokens(self) -> int:
        """The most tokens this request can consume: what admission should reserve."""
        return self.prompt_tokens + self.max_tokens * self.completions


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request actually consumed, from the engine's counts."""

    status: OutcomeStatus
    prompt_tokens: int
    completion_tokens: int
    finished_at: dt.datetime
    cached_tokens: int = 0
    first_token_at: dt.datetime | None = None
    latency_ms: int = 0
    backend: str | None = None
    error_code: str | None = None
    delivered: bool = True  # False: the client received nothing of the response

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Admission(Protocol):
    """An admitted request's reservation."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers for the response (`x-ratelimit-*`)."""
        ...

    async def settle(self, outcome: Outcome) -> None:
        """Replace the reservation by the actual use; must not raise."""
        ...


class Admitter(Protocol):
    async def admit(self, ticket: Ticket) -> Admission:
        """Reserve capacity for the ticket or raise `RateLimited` / `QuotaExceeded`."""
        ...


class Meter(Protocol):
    @property
    def checkpoint_s(self) -> float:
        """How often a delivering stream reports its progress (inf: never)."""
        ...

    async def record(self, ticket: Ticket) -> None:
        """Write the request as started (idempotent on `ticket.request_id`)."""
        ...

    def progress(self, ticket: Ticket, completion_tokens: int, first_token_at: dt.datetime) -> None:
        """Note the completion tokens delivered so far; must neither wait nor raise."""
        ...

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        """Finalise the request's row; must not raise."""
        ...


@dataclass(frozen=True, slots=True)
class Unlimited:
    """Admission that always admits and reserves nothing."""

    headers: Mapping[str, str] = field(default_factory=dict)

    async def admit(self, ticket: Ticket) -> Admission:
        return self

    async def settle(self, outcome: Outcome) -> None:
        return None


class NoMeter:
    """Metering that records nothing."""

    checkpoint_s = math.inf

    async def record(self, ticket: Ticket) -> None:
        return None

    def progress(self, ticket: Ticket, completion_tokens: int, first_token_at: dt.datetime) -> None:
        return None

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        return None
