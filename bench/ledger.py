"""The ledger write path alone: does group commit help, and what does a request cost?

    python -m bench.ledger [--requests 2000] [--server-url postgresql://…]

For each store (the PostgreSQL fast path, the portable SQLAlchemy path on PostgreSQL, and
SQLite) and for concurrency 1 and 64, with batching on and off: N requests each `start`
then `finish` through `LedgerWriter`, as the gateway's meter does. Reports requests/s and
this process's CPU ms per request, checks the rollups against the ledger, prints a table
and writes bench/results/ledger.json. Uses throwaway databases.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from auth.models import Account, ApiKey
from bench.reports import admin, default_server_url, plain
from billing.ledger import RequestFinish, RequestStart
from billing.models import LedgerEntry, Status, UsageDaily
from billing.stores import AsyncpgStore, LedgerStore, SessionStore
from billing.writer import LedgerWriter
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade

RESULTS = Path(__file__).parent / "results" / "ledger.json"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_case(
    url: str, kind: str, concurrency: int, batching: bool, requests: int
) -> dict[str, Any]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        async with transaction(sessions) as session:
            account = Account(email=f"{uuid.uuid4().hex}@example.com", name="b", tier="free")
            session.add(account)
            await session.flush()
            key = ApiKey(account_id=account.id, key_hash=uuid.uuid4().hex * 2, prefix="sk-b")
            session.add(key)
            await session.flush()
            pair = (account.id, key.id)
        store: LedgerStore = (
            await AsyncpgStore(url).open() if kind == "asyncpg" else SessionStore(sessions)
        )
        writer = LedgerWriter(store, instance_id="bench", batching=batching)
        gate = asyncio.Semaphore(concurrency)

        async def request(i: int) -> None:
            async with gate:
                rid = f"{kind}-{concurrency}-{batching}-{i}"
                now = dt.datetime.now(dt.UTC)
                await writer.start(RequestStart(rid, *pair, "tiny", 10, now))
                await writer.finish(RequestFinish(rid, Status.OK, 10, 16, now))

        await asyncio.gather(*(request(-i - 1) for i in range(20)))  # warm-up
        cpu, wall = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(request(i) for i in range(requests)))
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        await writer.close()
        async with sessions() as session:
            ledger = (await session.execute(select(func.count(LedgerEntry.request_id)))).scalar()
            rolled = (await session.execute(select(func.sum(UsageDaily.requests)))).scalar()
    finally:
        await engine.dispose()
    return {
        "store": kind,
        "concurrency": concurrency,
        "batching": batching,
        "requests_per_s": round(requests / wall),
        "cpu_ms_per_request": round(cpu * 1000 / requests, 3),
        "rollups_equal_ledger": int(rolled or 0) == int(ledger or 0),
        **writer.stats(),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    name = f"sg_bench_ledger_{uuid.uuid4().hex[:10]}"
    await admin(args.server_url, f'CREATE DATABASE "{name}"')
    pg = make_url(plain(args.server_url)).set(database=name).render_as_string(hide_password=False)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
            sqlite = f"sqlite:///{tmp}/ledger.db"
            for url in (pg, sqlite):
                await asyncio.to_thread(upgrade, url)
            cases = [("asyncpg", pg), ("sqlalchemy", pg), ("sqlite", sqlite)]
            for kind, url in cases:
                for concurrency in (1, 64):
                    for batching in (False, True):
                        if concurrency == 1 and batching:
                            continue  # nothing to group at concurrency 1
                        store = "asyncpg" if kind == "asyncpg" else "session"
                        row = await one_case(url, store, concurrency, batching, args.requests)
                        results.append({**row, "store": kind})
    finally:
        await admin(args.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--server-url", default=default_server_url(), help="PostgreSQL server")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    table = Table(title=f"Ledger writes: start + finish per request ({args.requests} requests)")
    for column in ("store", "concurrency", "batching", "req/s", "CPU ms/req", "tx", "ok"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for r in rows:
        transactions = r["batches"] if r["batching"] else "2/req"
        table.add_row(
            r["store"],
            str(r["concurrency"]),
            "on" if r["batching"] else "off",
            f"{r['requests_per_s']:,}",
            f"{r['cpu_ms_per_request']:.3f}",
            str(transactions),
            "yes" if r["rollups_equal_ledger"] else "NO",
        )
    Console().print(table)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rows, indent=2) + "\n")
    Console().print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
