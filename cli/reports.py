"""`sluicegate report …` and `sluicegate prices …`: billing on the command line.

`register(app)` adds both sub-apps to the main `sluicegate` app; the database URL comes from
the main app's callback (`ctx.obj` is its `Settings`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from auth import audit
from auth.accounts import get_account
from billing import export
from billing.models import Price
from billing.prices import PriceCreate, list_prices, set_price
from billing.reports import (
    Invoice,
    UsageRow,
    invoice,
    parse_group_by,
    parse_month,
    parse_range,
    usage_report,
)
from cli.common import console, run_db, settings_of, table
from core.errors import InvalidRequest

T = TypeVar("T")

report_app = typer.Typer(help="Usage reports and invoices.", no_args_is_help=True)
prices_app = typer.Typer(
    help="Prices per model (micro-dollars per 1k tokens).", no_args_is_help=True
)

FormatOption = Annotated[str, typer.Option("--format", help="table, csv or json")]


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
    app.add_typer(prices_app, name="prices")


def _range(month: str | None, start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    if month and (start or end):
        raise InvalidRequest("give either --month or --start/--end", param="month")
    if month:
        return parse_month(month)
    return parse_range(start, end)


def _print_usage(rows: list[UsageRow], columns: list[str], fmt: str, title: str) -> None:
    if fmt == "csv":
        typer.echo(export.rows_to_csv(rows, columns), nl=False)
    elif fmt == "json":
        typer.echo(json.dumps(export.usage_list(rows, columns), indent=2))
    else:
        shown = [*columns, "cost"]
        table(
            title,
            shown,
            [[*(r[c] for c in columns), export.dollars(int(r["cost_micros"]))] for r in rows],
        )


@report_app.command("usage")
def report_usage(
    ctx: typer.Context,
    month: Annotated[str | None, typer.Option(help="A month, e.g. 2026-11")] = None,
    start: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD)")] = None,
    end: Annotated[str | None, typer.Option(help="Day after the last (YYYY-MM-DD)")] = None,
    group_by: Annotated[
        str, typer.Option(help="Comma-separated: account, key, model, day, month")
    ] = "account,model",
    fmt: FormatOption = "table",
) -> None:
    """Usage of every account over a month or [start, end)."""

    async def work(session: AsyncSession) -> tuple[tuple[str, ...], list[UsageRow]]:
        first, last = _range(month, start, end)
        fields = parse_group_by(group_by)
        _check_format(fmt, ("table", "csv", "json"))
        return fields, await usage_report(session, start=first, end=last, group_by=fields)

    fields, rows = run_db(settings_of(ctx), work)
    _print_usage(rows, export.report_columns(fields), fmt, f"usage {month or f'{start}..{end}'}")


def _check_format(fmt: str, allowed: Sequence[str]) -> None:
    if fmt not in allowed:
        raise InvalidRequest(f"--format must be one of {', '.join(allowed)}", param="format")


@report_app.command("invoice")
def report_invoice(
    ctx: typer.Context,
    account: Annotated[str, typer.Option(help="Account id (acct_…)")],
    month: Annotated[str, typer.Option(help="A month, e.g. 2026-11")],
    fmt: FormatOption = "table",
) -> None:
    """One account's month: a line per model, split by price, and the total."""

    async def work(session: AsyncSession) -> Invoice:
        _check_format(fmt, ("table", "json"))
        await get_account(session, account_id=account)
        return await invoice(session, account_id=account, month=month)

    bill = run_db(settings_of(ctx), work)
    if fmt == "json":
        typer.echo(json.dumps(export.invoice_dict(bill), indent=2))
        return
    rows: list[list[Any]] = []
    for line in bill.lines:
        for part in line.prices:
            rows.append(
                [
                    line.model,
                    f"{part.prompt_micros_per_1k}/{part.completion_micros_per_1k}"
                    if part.price_id is not None
                    else "unpriced",
                    part.usage.requests,
                    part.usage.prompt_tokens,
                    part.usage.completion_tokens,
                    export.dollars(part.usage.cost_micros),
                ]
            )
    total = bill.total
    rows.append(["total", "", total.requests, total.prompt_tokens, total.completion_tokens,
                 export.dollars(total.cost_micros)])  # fmt: skip
    columns = ["model", "price (µ$/1k p/c)", "requests", "prompt", "completion", "cost"]
    table(f"invoice {bill.account_id} {bill.month}", columns, rows)


@prices_app.command("list")
def prices_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
) -> None:
    """Every price, oldest first per model."""

    async def work(session: AsyncSession) -> list[Price]:
        return await list_prices(session, model=model)

    prices = run_db(settings_of(ctx), work)
    table(
        "prices",
        ["id", "model", "prompt µ$/1k", "completion µ$/1k", "effective from"],
        [
            [p.id, p.model, p.prompt_micros_per_1k, p.completion_micros_per_1k,
             p.effective_from.isoformat()]
            for p in prices
        ],
    )  # fmt: skip


@prices_app.command("set")
def prices_set(
    ctx: typer.Context,
    model: str,
    prompt: Annotated[int, typer.Option(help="Micro-dollars per 1,000 prompt tokens")],
    completion: Annotated[int, typer.Option(help="Micro-dollars per 1,000 completion tokens")],
    effective_from: Annotated[
        str | None, typer.Option(help="ISO 8601 time with zone (default: now)")
    ] = None,
) -> None:
    """Add a price taking effect now or later (past costs never change)."""

    async def work(session: AsyncSession) -> Price:
        price = await set_price(
            session, PriceCreate(model, prompt, completion, _when(effective_from))
        )
        await audit.record(
            session,
            actor=audit.CLI_ACTOR,
            action="prices.set",
            target=model,
            details={"price_id": price.id, "prompt_micros_per_1k": prompt,
                     "completion_micros_per_1k": completion,
                     "effective_from": price.effective_from.isoformat()},
        )  # fmt: skip
        return price

    price = run_db(settings_of(ctx), work)
    console().print(
        f"price {price.id} for {price.model}: {price.prompt_micros_per_1k} µ$/1k prompt, "
        f"{price.completion_micros_per_1k} µ$/1k completion, "
        f"from {price.effective_from.isoformat()}"
    )


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            "--effective-from must be an ISO 8601 time", param="effective_from"
        ) from None
