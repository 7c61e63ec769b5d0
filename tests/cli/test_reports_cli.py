"""`sluicegate report usage|invoice` and `sluicegate prices list|set` on a real database."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json

import pytest
from typer.testing import CliRunner

from billing.ledger import RequestFinish, RequestStart, finish_rows, start_rows
from billing.models import Status
from billing.prices import PriceCreate, set_price
from cli.main import app
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade
from tests.billing.conftest import seed_accounts

NOV = dt.datetime(2026, 11, 5, 8, tzinfo=dt.UTC)


async def _seed(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        pairs = await seed_accounts(sessions, accounts=2, keys_per_account=1)
        async with transaction(sessions) as session:
            await set_price(session, PriceCreate("tiny", 2000, 4000), now=NOV - dt.timedelta(1))
            for i, (account, key) in enumerate(pairs):
                for j in range(i + 1):
                    rid = f"r{i}{j}"
                    start = RequestStart(rid, account, key, "tiny", 1000, NOV)
                    await start_rows(session, [start], instance_id="cli-test")
                    await finish_rows(session, [RequestFinish(rid, Status.OK, 1000, 500, NOV)])
        return pairs
    finally:
        await engine.dispose()


@pytest.fixture
def seeded(database_url: str) -> tuple[str, list[tuple[str, str]]]:
    upgrade(database_url)
    return database_url, asyncio.run(_seed(database_url))


def _invoke(url: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["--database-url", url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_report_usage_in_every_format(seeded: tuple[str, list[tuple[str, str]]]) -> None:
    url, pairs = seeded
    (a, _), (b, _) = pairs
    as_json = json.loads(_invoke(url, "report", "usage", "--month", "2026-11", "--format", "json"))
    assert as_json == {
        "object": "list",
        "data": sorted(
            [
                {"account_id": a, "model": "tiny", "requests": 1, "prompt_tokens": 1000,
                 "completion_tokens": 500, "cost_micros": 4000},
                {"account_id": b, "model": "tiny", "requests": 2, "prompt_tokens": 2000,
                 "completion_tokens": 1000, "cost_micros": 8000},
            ],
            key=lambda r: str(r["account_id"]),
        ),
    }  # fmt: skip
    as_csv = _invoke(
        url, "report", "usage", "--month", "2026-11", "--group-by", "day", "--format", "csv"
    )
    assert list(csv.DictReader(io.StringIO(as_csv))) == [
        {"day": "2026-11-05", "requests": "3", "prompt_tokens": "3000",
         "completion_tokens": "1500", "cost_micros": "12000"}
    ]  # fmt: skip
    table = _invoke(url, "report", "usage", "--start", "2026-11-01", "--end", "2026-11-06")
    assert a in table and b in table and "$0.008000" in table
    empty = _invoke(url, "report", "usage", "--month", "2026-10", "--format", "json")
    assert json.loads(empty)["data"] == []


def test_report_refuses_bad_input(seeded: tuple[str, list[tuple[str, str]]]) -> None:
    url, _ = seeded
    for args in (
        ["--month", "2026-13"],
        ["--start", "2026-11-05", "--end", "2026-11-01"],
        ["--month", "2026-11", "--group-by", "planet"],
        ["--month", "2026-11", "--format", "xml"],
    ):
        result = CliRunner().invoke(app, ["--database-url", url, "report", "usage", *args])
        assert result.exit_code == 1 and "error:" in result.output, args


def test_invoice_and_prices(seeded: tuple[str, list[tuple[str, str]]]) -> None:
    url, pairs = seeded
    account = pairs[1][0]
    bill = json.loads(
        _invoke(url, "report", "invoice", "--account", account, "--month", "2026-11",
                "--format", "json")
    )  # fmt: skip
    assert bill["total"]["cost_micros"] == 8000 and len(bill["lines"]) == 1
    table = _invoke(url, "report", "invoice", "--account", account, "--month", "2026-11")
    assert "2000/4000" in table and "$0.008000" in table and "total" in table
    missing = CliRunner().invoke(
        app,
        ["--database-url", url, "report", "invoice", "--account", "acct_x", "--month", "2026-11"],
    )
    assert missing.exit_code == 1

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    out = _invoke(url, "prices", "set", "tiny", "--prompt", "2500", "--completion", "5000",
                  "--effective-from", later)  # fmt: skip
    assert "for tiny" in out
    listed = _invoke(url, "prices", "list", "--model", "tiny")
    assert "2000" in listed and "2500" in listed
    past = CliRunner().invoke(
        app,
        ["--database-url", url, "prices", "set", "tiny", "--prompt", "1", "--completion", "1",
         "--effective-from", "2020-01-01T00:00:00+00:00"],
    )  # fmt: skip
    assert past.exit_code == 1 and "past" in past.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["m" * 81], "at most 80"),  # the audit row's target column (PostgreSQL: was a 500)
        (["tiny", "--effective-from", "9999-12-31T23:59:59-14:00"], "between 1970"),
    ],
)
def test_prices_set_refuses_what_the_database_cannot_store(
    database_url: str, args: list[str], says: str
) -> None:
    upgrade(database_url)
    model, *options = args
    result = CliRunner().invoke(
        app,
        ["--database-url", database_url, "prices", "set", model, "--prompt", "1",
         "--completion", "1", *options],
    )  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert says in result.output
