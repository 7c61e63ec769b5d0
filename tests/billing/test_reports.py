"""Reports from rollups equal ledger sums; invoices split by price; bad input is refused."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import pytest

from billing.ledger import RequestProgress, finish_rows, progress_rows, start_rows
from billing.models import Price, Status
from billing.prices import PriceCreate, cost_micros, set_price
from billing.reports import (
    GROUP_FIELDS,
    invoice,
    parse_group_by,
    parse_month,
    parse_range,
    usage_from_ledger,
    usage_report,
)
from billing.sweeper import SweepPolicy, sweep
from core.db import transaction
from core.errors import InvalidRequest
from tests.billing.conftest import BillingDb, a_finish, a_start

D = dt.date
UTC = dt.UTC


def at(day: D, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@dataclass
class Scenario:
    tiny_old: Price
    tiny_new: Price  # takes effect 2026-11-15, mid-month
    big: Price
    account_a: str
    account_b: str


async def _request(
    db: BillingDb,
    rid: str,
    pair: tuple[str, str],
    model: str,
    received: dt.datetime,
    prompt: int,
    completion: int,
    *,
    status: Status = Status.OK,
    finished: dt.datetime | None = None,
) -> None:
    async with transaction(db.sessions) as session:
        start = a_start(rid, pair, model=model, prompt_tokens=prompt, received_at=received)
        await start_rows(session, [start], instance_id="dead-instance")
        if status is Status.INTERRUPTED:  # a stream: checkpointed, then its gateway died
            await progress_rows(session, [RequestProgress(rid, completion, received)])
        else:
            finish = a_finish(
                rid,
                status=status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                finished_at=finished or received + dt.timedelta(seconds=1),
            )
            await finish_rows(session, [finish])


async def _scenario(db: BillingDb) -> Scenario:
    async with transaction(db.sessions) as session:
        since = at(D(2026, 10, 1), 0)
        tiny_old = await set_price(session, PriceCreate("tiny", 1000, 2000), now=since)
        big = await set_price(session, PriceCreate("big", 3000, 6000), now=since)
        tiny_new = await set_price(
            session, PriceCreate("tiny", 1500, 2500), now=at(D(2026, 11, 15), 0)
        )
    (a, a_k0), (_, a_k1), (b, b_k0), _ = db.keys
    reqs = [
        ("oct", (a, a_k0), "tiny", at(D(2026, 10, 31), 23, 59), 100, 10),
        ("nov1", (a, a_k0), "tiny", at(D(2026, 11, 1), 0, 0), 200, 20),
        ("nov10", (a, a_k1), "tiny", at(D(2026, 11, 10)), 333, 77),
        ("nov10big", (a, a_k1), "big", at(D(2026, 11, 10)), 50, 5),
        ("nov20", (a, a_k0), "tiny", at(D(2026, 11, 20)), 400, 40),
        ("nov20err", (a, a_k0), "tiny", at(D(2026, 11, 20)), 7, 3),
        ("nov20b", (b, b_k0), "tiny", at(D(2026, 11, 20)), 1000, 1000),
        ("dec1", (a, a_k0), "tiny", at(D(2026, 12, 1), 0, 0), 1, 1),
    ]
    for rid, pair, model, received, prompt, completion in reqs:
        status = Status.ERROR if rid.endswith("err") else Status.OK
        await _request(db, rid, pair, model, received, prompt, completion, status=status)
    # Finalised the next month: still November's usage (the day is the day it was received).
    await _request(
        db,
        "late",
        (a, a_k0),
        "tiny",
        at(D(2026, 11, 30), 23, 59),
        9,
        9,
        finished=at(D(2026, 12, 1), 0, 5),
    )
    # Left started by a gateway that died; the sweeper bills its prompt and checkpoint.
    await _request(
        db, "crash", (a, a_k1), "big", at(D(2026, 11, 29)), 70, 6, status=Status.INTERRUPTED
    )
    assert await sweep(db.sessions, now=at(D(2026, 11, 29), 13), policy=SweepPolicy()) == 1
    return Scenario(tiny_old, tiny_new, big, a, b)


@pytest.fixture
async def scenario(billing_db: BillingDb) -> Scenario:
    return await _scenario(billing_db)


async def test_every_grouping_of_the_rollups_equals_the_ledger(
    billing_db: BillingDb, scenario: Scenario
) -> None:
    start, end = D(2026, 10, 1), D(2027, 1, 1)
    fields = list(GROUP_FIELDS)
    async with billing_db.sessions() as session:
        for size in range(len(fields) + 1):
            for group_by in itertools.combinations(fields, size):
                from_rollups = await usage_report(session, start=start, end=end, group_by=group_by)
                from_ledger = await usage_from_ledger(
                    session, start=start, end=end, group_by=group_by
                )
                assert from_rollups == from_ledger, group_by
                assert from_rollups, group_by
        for account in (scenario.account_a, scenario.account_b):
            assert await usage_report(
                session, start=start, end=end, group_by=("model",), account_id=account
            ) == await usage_from_ledger(
                session, start=start, end=end, group_by=("model",), account_id=account
            )


async def test_month_rows_have_exact_numbers(billing_db: BillingDb, scenario: Scenario) -> None:
    s = scenario
    async with billing_db.sessions() as session:
        rows = await usage_report(
            session, start=D(2026, 10, 1), end=D(2027, 1, 1), group_by=("month", "account")
        )
    nov_a_cost = (
        cost_micros(200, 20, s.tiny_old)
        + cost_micros(333, 77, s.tiny_old)
        + cost_micros(50, 5, s.big)
        + cost_micros(400, 40, s.tiny_new)
        + cost_micros(7, 3, s.tiny_new)
        + cost_micros(9, 9, s.tiny_new)
        + cost_micros(70, 6, s.big)
    )
    a, b = s.account_a, s.account_b
    expected = [
        {"month": "2026-10", "account_id": a, "requests": 1, "prompt_tokens": 100,
         "completion_tokens": 10, "cost_micros": cost_micros(100, 10, s.tiny_old)},
        {"month": "2026-11", "account_id": a, "requests": 7, "prompt_tokens": 1069,
         "completion_tokens": 160, "cost_micros": nov_a_cost},
        {"month": "2026-11", "account_id": b, "requests": 1, "prompt_tokens": 1000,
         "completion_tokens": 1000, "cost_micros": cost_micros(1000, 1000, s.tiny_new)},
        {"month": "2026-12", "account_id": a, "requests": 1, "prompt_tokens": 1,
         "completion_tokens": 1, "cost_micros": cost_micros(1, 1, s.tiny_new)},
    ]  # fmt: skip
    expected.sort(key=lambda r: (r["month"], r["account_id"]))  # the report's order
    assert rows == expected


async def test_day_rows_are_iso_dates_and_the_range_is_half_open(
    billing_db: BillingDb, scenario: Scenario
) -> None:
    async with billing_db.sessions() as session:
        rows = await usage_report(
            session, start=D(2026, 11, 1), end=D(2026, 11, 30), group_by=("day",)
        )
    assert [r["day"] for r in rows] == ["2026-11-01", "2026-11-10", "2026-11-20", "2026-11-29"]
    assert [r["requests"] for r in rows] == [1, 2, 3, 1]


async def test_total_without_group_by(billing_db: BillingDb, scenario: Scenario) -> None:
    async with billing_db.sessions() as session:
        [total] = await usage_report(session, start=D(2026, 11, 1), end=D(2026, 12, 1), group_by=())
        [empty] = await usage_report(session, start=D(2030, 1, 1), end=D(2030, 2, 1), group_by=())
    assert (total["requests"], total["prompt_tokens"]) == (8, 2069)
    assert empty == {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0}


async def test_invoice_splits_by_price_mid_month(billing_db: BillingDb, scenario: Scenario) -> None:
    s = scenario
    async with billing_db.sessions() as session:
        bill = await invoice(session, account_id=s.account_a, month="2026-11")
        nothing = await invoice(session, account_id=s.account_a, month="2027-03")
    assert [line.model for line in bill.lines] == ["big", "tiny"]
    big, tiny = bill.lines
    assert [p.price_id for p in tiny.prices] == [s.tiny_old.id, s.tiny_new.id]
    old_part, new_part = tiny.prices
    assert (old_part.usage.requests, old_part.usage.prompt_tokens) == (2, 533)
    assert old_part.usage.cost_micros == cost_micros(200, 20, s.tiny_old) + cost_micros(
        333, 77, s.tiny_old
    )
    assert (new_part.prompt_micros_per_1k, new_part.completion_micros_per_1k) == (1500, 2500)
    assert new_part.effective_from == at(D(2026, 11, 15), 0)
    assert (new_part.usage.requests, new_part.usage.completion_tokens) == (3, 52)
    assert new_part.usage.cost_micros == sum(
        cost_micros(p, c, s.tiny_new) for p, c in ((400, 40), (7, 3), (9, 9))
    )
    assert tiny.usage.cost_micros == old_part.usage.cost_micros + new_part.usage.cost_micros
    assert [p.price_id for p in big.prices] == [s.big.id]
    assert big.usage.cost_micros == cost_micros(50, 5, s.big) + cost_micros(70, 6, s.big)
    assert bill.total.cost_micros == big.usage.cost_micros + tiny.usage.cost_micros
    assert bill.total.requests == 7
    assert (nothing.lines, nothing.total.cost_micros) == ([], 0)


@pytest.mark.parametrize(
    ("start", "end", "param"),
    [
        ("2026-11-02", "2026-11-01", "end"),  # reversed
        ("2026-11-01", "2026-11-01", "end"),  # empty
        (None, "2026-11-01", "start"),
        ("2026-11-01", "", "end"),
        ("2026-13-01", "2026-12-01", "start"),
        ("2026-11-01T00:00", "2026-12-01", "start"),
        ("1990-01-01", "2026-12-01", "end"),  # far too long
        ("1969-12-31", "1970-01-02", "start"),  # before what the database stores
        ("9998-12-31", "9999-01-01", "end"),  # past the last day an instant may have
    ],
)
def test_bad_ranges(start: str | None, end: str | None, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_range(start, end)
    assert info.value.param == param


@pytest.mark.parametrize("value", ["account,bogus", "day,day", "Account"])
def test_bad_group_by(value: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_group_by(value)
    assert info.value.param == "group_by"


def test_group_by_and_month_parsing() -> None:
    assert parse_group_by(" account, model ,day") == ("account", "model", "day")
    assert parse_group_by("") == () and parse_group_by(None) == ()
    assert parse_month("2026-12") == (D(2026, 12, 1), D(2027, 1, 1))
    for bad in ("2026-13", "2026-1", "", "26-11", "2026-11-01"):
        with pytest.raises(InvalidRequest):
            parse_month(bad)
