"""`Job.finish`: both stores settle exactly once, at the same time, whatever happens."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from api.generation.hooks import NoMeter, Outcome, Ticket, Unlimited
from api.generation.job import Job, RequestContext
from api.generation.openai_render import PromptInfo
from inference.params import SamplingParams

SETTLE_S = 0.2


@dataclass
class SlowAdmission:
    headers: dict[str, str] = field(default_factory=dict)
    started: int = 0
    settled: list[Outcome] = field(default_factory=list)

    async def settle(self, outcome: Outcome) -> None:
        self.started += 1
        await asyncio.sleep(SETTLE_S)
        self.settled.append(outcome)


@dataclass
class SlowMeter:
    started: int = 0
    settled: list[tuple[Ticket, Outcome]] = field(default_factory=list)
    checkpoint_s: float = math.inf

    def progress(self, ticket: Ticket, completion_tokens: int, first_token_at: dt.datetime) -> None:
        return None

    async def record(self, ticket: Ticket) -> None:
        return None

    async def settle(self, ticket: Ticket, outcome: Outcome) -> None:
        self.started += 1
        await asyncio.sleep(SETTLE_S)
        self.settled.append((ticket, outcome))


def job(admission: Any, meter: Any) -> Job:
    now = dt.datetime.now(dt.UTC)
    caller = SimpleNamespace(account_id="acct_1", key_id="key_1", may_use=lambda _: True)
    ticket = Ticket("req_1", caller, "tiny", "completions", 3, 5, 1, False, None, now)
    plan = SimpleNamespace(prompts=[PromptInfo([1, 2, 3])], params=SamplingParams(max_tokens=5))

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    ctx = RequestContext("req_1", receive, now, time.perf_counter(), {})
    return Job(meter, None, None, ticket, plan, admission, ctx, 0)  # type: ignore[arg-type]


async def test_the_limiter_and_the_ledger_settle_at_once_and_exactly_once() -> None:
    admission, meter = SlowAdmission(), SlowMeter()
    settling = job(admission, meter)
    started = time.monotonic()
    await asyncio.gather(settling.finish("ok"), settling.finish("error", "late"))
    assert time.monotonic() - started < SETTLE_S * 1.75  # one wait, not two
    [outcome] = admission.settled
    [(ticket, metered)] = meter.settled
    assert outcome is metered and outcome.status == "ok" and ticket.request_id == "req_1"
    assert outcome.prompt_tokens == 0 and outcome.completion_tokens == 0  # nothing generated


async def test_a_cancelled_finish_still_starts_both_settles() -> None:
    admission, meter = SlowAdmission(), SlowMeter()
    finishing = asyncio.ensure_future(job(admission, meter).finish("aborted"))
    await asyncio.sleep(SETTLE_S / 4)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    # Both were under way when the cancellation came (one did not wait for the other).
    assert admission.started == meter.started == 1
    assert admission.settled == [] and meter.settled == []
    # The ledger's settle was not cut short: the row is finalised all the same.
    await asyncio.sleep(SETTLE_S)
    assert len(meter.settled) == 1


@pytest.mark.parametrize("store", ["admission", "meter"])
async def test_with_one_real_store_it_settles_inline(store: str) -> None:
    admission: Any = SlowAdmission() if store == "admission" else Unlimited()
    meter: Any = SlowMeter() if store == "meter" else NoMeter()
    tasks_before = len(asyncio.all_tasks())
    finishing = asyncio.ensure_future(job(admission, meter).finish("ok"))
    await asyncio.sleep(SETTLE_S / 4)
    assert len(asyncio.all_tasks()) == tasks_before + 1  # the finish itself, nothing more
    await finishing
    assert len((admission if store == "admission" else meter).settled) == 1
