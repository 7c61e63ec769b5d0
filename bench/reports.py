"""Billing reports on a large ledger (PostgreSQL).

    python -m bench.reports [--rows 1000000] [--accounts 1000] [--server-url postgresql://…]

Creates a throwaway database on the server, migrates it, bulk-loads `--rows` finalised
ledger rows over `--accounts` accounts (two keys each) and 3 models for one month (COPY via
asyncpg; one model's price changes mid-month), builds the daily rollups with one
INSERT … SELECT, then times what operators run: the month's all-accounts report (from the
rollups, through `billing.reports.usage_report` and the JSON body the API returns) and one
account's invoice. Checks both against sums over the ledger, prints a table, writes
bench/results/reports.json and drops the database. Targets: report <= 1 s, invoice <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from billing import export
from billing.models import Price
from billing.prices import PriceCreate, cost_micros, set_price
from billing.reports import Invoice, invoice, usage_report
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade

RESULTS = Path(__file__).parent / "results" / "reports.json"
MONTH = "2026-11"
MONTH_START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MONTH_END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
MODELS = ("tiny", "small", "large")
LEDGER_COLUMNS = (
    "request_id", "account_id", "key_id", "model", "backend", "prompt_tokens",
    "completion_tokens", "cached_prompt_tokens", "status", "received_at", "first_token_at",
    "finished_at", "latency_ms", "price_id", "cost_micros", "instance_id",
)  # fmt: skip
ROLLUP_SQL = """
INSERT INTO usage_daily (account_id, day, key_id, model, price_id, requests, prompt_tokens,
                         completion_tokens, cost_micros)
SELECT account_id, (received_at AT TIME ZONE 'UTC')::date, key_id, model, COALESCE(price_id, 0),
       count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros)
FROM ledger WHERE status <> 'started'
GROUP BY 1, 2, 3, 4, 5
"""


def default_server_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgresql") else "postgresql://postgres@127.0.0.1:5432/postgres"


def plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(server_url: str, statement: str) -> None:
    conn = await asyncpg.connect(plain(server_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def seed_prices(url: str) -> dict[str, list[Price]]:
    """tiny/small/large from before the month; large gets a new price on the 15th."""
    engine = create_engine(url)
    before = MONTH_START - dt.timedelta(days=30)
    schedule = [
        ("tiny", 100, 200, before),
        ("small", 500, 1500, before),
        ("large", 3000, 6000, before),
        ("large", 2500, 5000, MONTH_START + dt.timedelta(days=14)),
    ]
    prices: dict[str, list[Price]] = {m: [] for m in MODELS}
    try:
        async with transaction(session_factory(engine)) as session:
            for model, prompt, completion, start in schedule:
                new = PriceCreate(model, prompt, completion, effective_from=start)
                prices[model].append(await set_price(session, new, now=start))
    finally:
        await engine.dispose()
    return prices


def price_at(prices: list[Price], at: dt.datetime) -> Price:
    return [p for p in prices if p.effective_from <= at][-1]


def ledger_records(
    first: int, n: int, keys: list[tuple[str, str]], prices: dict[str, list[Price]]
) -> Iterator[tuple[Any, ...]]:
    """Rows first..first+n-1, finalised, spread over the month (98% ok, 1% error, 1% aborted)."""
    rng = random.Random(first)
    seconds = int((MONTH_END - MONTH_START).total_seconds())
    for i in range(first, first + n):
        account_id, key_id = keys[rng.randrange(len(keys))]
        model = MODELS[rng.randrange(3)]
        received = MONTH_START + dt.timedelta(seconds=rng.randrange(seconds))
        prompt, completion = rng.randrange(1, 2000), rng.randrange(0, 1000)
        roll = rng.random()
        status = "ok" if roll < 0.98 else ("error" if roll < 0.99 else "aborted")
        price = price_at(prices[model], received)
        yield (
            f"req_{i:024x}", account_id, key_id, model, "local", prompt, completion, 0, status,
            received, received + dt.timedelta(milliseconds=50), received + dt.timedelta(seconds=1),
            1000, price.id, cost_micros(prompt, completion, price), "bench",
        )  # fmt: skip


async def bulk_load(url: str, rows: int, accounts: int, prices: dict[str, list[Price]]) -> float:
    """Accounts, keys and ledger by COPY, rollups by one INSERT … SELECT; returns seconds."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    account_rows = [
        (f"acct_{a:024x}", f"bench{a}@example.com", f"Bench {a}", "standard", "active", now, now)
        for a in range(accounts)
    ]
    key_rows = [
        (f"key_{a:024x}{k}", f"acct_{a:024x}", uuid.uuid4().hex * 2, "sk-bench", now)
        for a in range(accounts)
        for k in range(2)
    ]
    keys = [(row[1], row[0]) for row in key_rows]
    conn = await asyncpg.connect(plain(url))
    try:
        # The generated rows are consistent by construction: skip per-row FK triggers.
        await conn.execute("SET session_replication_role = replica")
        await conn.copy_records_to_table(
            "accounts",
            records=account_rows,
            columns=["id", "email", "name", "tier", "status", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table(
            "api_keys",
            records=key_rows,
            columns=["id", "account_id", "key_hash", "prefix", "created_at"],
        )
        chunk = 200_000
        for first in range(0, rows, chunk):
            records = ledger_records(first, min(chunk, rows - first), keys, prices)
            await conn.copy_records_to_table("ledger", records=records, columns=LEDGER_COLUMNS)
        await conn.execute("SET session_replication_role = DEFAULT")
        await conn.execute(ROLLUP_SQL)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def timed(work: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    result = await work()  # warm-up: plans and caches, as on a running server
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        times.append(time.perf_counter() - started)
    return times, result


async def measure(url: str, accounts: int, repeat: int) -> dict[str, Any]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    start, end = MONTH_START.date(), MONTH_END.date()
    try:
        async with sessions() as session:

            async def report(group_by: tuple[str, ...]) -> dict[str, Any]:
                rows = await usage_report(session, start=start, end=end, group_by=group_by)
                return export.usage_list(rows, export.report_columns(group_by))

            by_account, body = await timed(lambda: report(("account", "model")), repeat)
            by_day, day_body = await timed(lambda: report(("account", "model", "day")), repeat)
            targets = [f"acct_{a:024x}" for a in random.Random(1).sample(range(accounts), repeat)]
            invoice_times = []
            for account in targets:

                async def bill_of(account_id: str = account) -> Invoice:
                    return await invoice(session, account_id=account_id, month=MONTH)

                spent, bill = await timed(bill_of, 1)
                invoice_times += spent
            checks = await _checks(session, body, bill)
    finally:
        await engine.dispose()
    return {
        "report_account_model_s": summary(by_account),
        "report_rows": len(body["data"]),
        "report_account_model_day_s": summary(by_day),
        "report_day_rows": len(day_body["data"]),
        "invoice_s": summary(invoice_times),
        "invoice_lines": [line.model for line in bill.lines],
        "checks": checks,
    }


async def _checks(session: Any, body: dict[str, Any], bill: Any) -> dict[str, bool]:
    """The report and the invoice equal sums over the ledger (not over the rollups)."""
    from sqlalchemy import text

    ledger = (
        await session.execute(
            text("SELECT count(*), sum(prompt_tokens), sum(cost_micros) FROM ledger")
        )
    ).one()
    account_cost = (
        await session.execute(
            text(
                "SELECT coalesce(sum(cost_micros), 0) FROM ledger WHERE account_id = :a "
                "AND received_at >= :s AND received_at < :e"
            ),
            {"a": bill.account_id, "s": MONTH_START, "e": MONTH_END},
        )
    ).scalar_one()
    rows = body["data"]
    return {
        "report_requests_equal_ledger": sum(r["requests"] for r in rows) == ledger[0],
        "report_prompt_tokens_equal_ledger": sum(r["prompt_tokens"] for r in rows) == ledger[1],
        "report_cost_equal_ledger": sum(r["cost_micros"] for r in rows) == ledger[2],
        "invoice_total_equal_ledger": bill.total.cost_micros == account_cost,
        "invoice_splits_large_by_price": any(
            line.model == "large" and len(line.prices) == 2 for line in bill.lines
        ),
    }


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median": round(statistics.median(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
        "max": round(ordered[-1], 4),
    }


def show(result: dict[str, Any], console: Console) -> None:
    title = f"Billing reports: {result['rows']:,} ledger rows, {result['accounts']:,} accounts"
    out = Table(title=title)
    for column in ("what", "median", "p95", "max", "target", "met"):
        out.add_column(column, justify="left" if column == "what" else "right")
    lines = [
        ("monthly report: account x model", result["report_account_model_s"], 1.0),
        ("monthly report: account x model x day", result["report_account_model_day_s"], None),
        ("invoice: one account, one month", result["invoice_s"], 0.05),
    ]
    for what, stats, target in lines:
        met = "" if target is None else ("yes" if stats["median"] <= target else "NO")
        out.add_row(
            what,
            f"{stats['median'] * 1000:.1f} ms",
            f"{stats['p95'] * 1000:.1f} ms",
            f"{stats['max'] * 1000:.1f} ms",
            "" if target is None else f"<= {target * 1000:.0f} ms",
            met,
        )
    console.print(out)
    console.print(f"bulk load (COPY + rollups + ANALYZE): {result['load_s']:.1f} s")
    console.print(f"checks against the ledger: {result['checks']}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"sg_bench_reports_{uuid.uuid4().hex[:10]}"
    await admin(args.server_url, f'CREATE DATABASE "{name}"')
    url = make_url(plain(args.server_url)).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        prices = await seed_prices(url)
        load_s = await bulk_load(url, args.rows, args.accounts, prices)
        result = await measure(url, args.accounts, args.repeat)
    finally:
        await admin(args.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {"rows": args.rows, "accounts": args.accounts, "load_s": round(load_s, 2), **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10, help="timed runs of each query")
    parser.add_argument("--server-url", default=default_server_url(), help="PostgreSQL server")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console()
    result = asyncio.run(run(args))
    show(result, console)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
