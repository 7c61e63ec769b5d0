"""Admin console: tiers and prices, usage reports (chart, table, CSV), invoices, audit log.

Reports come from `billing.reports` and are rendered by `billing.export`, exactly as
`/admin/reports/*` serves them; tier and price changes go through the audited operations.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.charts import bar_chart
from api.console.csrf import require_csrf
from api.console.deps import ConsoleAdminDep
from api.console.forms import field_errors, int_fields, text_fields, utc_day
from api.console.months import month_bounds, tokens
from api.console.paging import PAGE_ROWS, OffsetQuery, page_of
from api.console.render import page, redirect
from api.deps import IdPath, ServicesDep, SessionDep
from api.routes.prices import PriceCreateBody, add_price
from api.schemas import TierCreate, TierUpdate
from auth import accounts, admin, audit, operations, tiers
from auth.tiers import LIMIT_FIELDS, TierLimits
from billing import export
from billing.prices import list_prices
from billing.reports import (
    GROUP_FIELDS,
    invoice,
    parse_group_by,
    parse_month,
    parse_range,
    usage_report,
)
from core.db import utcnow

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf)], include_in_schema=False)

DayQuery = Annotated[str | None, Query(max_length=10)]
ShortQuery = Annotated[str | None, Query(max_length=80)]
REPORT_GROUPINGS = ("account", "key", "model", "day")


@router.get("/tiers")
async def tiers_page(request: Request, db: SessionDep, _: ConsoleAdminDep) -> Response:
    prices = await list_prices(db)
    history: dict[str, list[object]] = {}
    for price in prices:
        history.setdefault(price.model, []).append(price)
    return page(
        request,
        "admin/tiers.html",
        tiers=await tiers.list_tiers(db),
        limit_fields=LIMIT_FIELDS,
        prices=history,
        now=utcnow(),
    )


@router.post("/tiers")
async def create_tier(request: Request, db: SessionDep, admin_: ConsoleAdminDep) -> Response:
    form = await request.form()
    values = {**text_fields(form, ("name",)), **int_fields(form, LIMIT_FIELDS)}
    try:
        body = TierCreate.model_validate(values)
    except ValidationError as invalid:
        return redirect(request, "/admin/tiers", notice=_describe(invalid), kind="error")
    limits = TierLimits(**body.model_dump(exclude={"name"}))
    await operations.create_tier(db, actor=admin_.actor, name=body.name, limits=limits)
    return redirect(request, "/admin/tiers", notice=f"Tier {body.name} created.")


@router.post("/tiers/{name}")
async def update_tier(
    name: IdPath, request: Request, db: SessionDep, services: ServicesDep, admin_: ConsoleAdminDep
) -> Response:
    try:
        body = TierUpdate.model_validate(int_fields(await request.form(), LIMIT_FIELDS))
    except ValidationError as invalid:
        return redirect(request, "/admin/tiers", notice=_describe(invalid), kind="error")
    await operations.update_tier(db, actor=admin_.actor, name=name, changes=body.changes())
    await db.commit()
    await services.authenticator.invalidate()
    return redirect(request, "/admin/tiers", notice=f"Tier {name} saved.")


@router.post("/prices")
async def new_price(request: Request, db: SessionDep, admin_: ConsoleAdminDep) -> Response:
    form = await request.form()
    fields = ("prompt_micros_per_1k", "completion_micros_per_1k")
    try:
        body = PriceCreateBody.model_validate(
            {
                **text_fields(form, ("model",)),
                **int_fields(form, fields),
                "effective_from": _from_day(str(form.get("effective_on") or "")),
            }
        )
    except ValidationError as invalid:
        return redirect(request, "/admin/tiers", notice=_describe(invalid), kind="error")
    price = await add_price(db, actor=admin_.actor, body=body)
    return redirect(request, "/admin/tiers", notice=f"Price for {price.model} added.")


def _from_day(value: str) -> dt.datetime | None:
    """A day's midnight UTC; today (or blank) means now (a price never starts in the past)."""
    moment = utc_day(value, param="effective_on")
    return None if moment is None or moment.date() == utcnow().date() else moment


def _describe(invalid: ValidationError) -> str:
    return "; ".join(f"{field}: {message}" for field, message in field_errors(invalid).items())


def _default_range() -> tuple[str, str]:
    first, following = month_bounds(utcnow().date())
    return first.isoformat(), following.isoformat()


@router.get("/usage")
async def usage_page(
    request: Request,
    db: SessionDep,
    _: ConsoleAdminDep,
    start: DayQuery = None,
    end: DayQuery = None,
    group_by: Annotated[str, Query(max_length=16)] = "account",
) -> Response:
    default_start, default_end = _default_range()
    start, end = start or default_start, end or default_end
    first, last = parse_range(start, end)
    fields = parse_group_by(group_by if group_by in REPORT_GROUPINGS else "account")
    rows = await usage_report(db, start=first, end=last, group_by=fields)
    column = GROUP_FIELDS[fields[0]]
    ranked = sorted(rows, key=tokens, reverse=True) if fields[0] != "day" else rows
    return page(
        request,
        "admin/usage.html",
        start=start,
        end=end,
        group_by=fields[0],
        groupings=REPORT_GROUPINGS,
        columns=export.report_columns(fields),
        rows=ranked,
        usage_chart=bar_chart(
            [(str(row[column]), tokens(row)) for row in ranked[:31]],
            title=f"Tokens by {fields[0]}",
            unit="tokens",
        ),
        month=first.strftime("%Y-%m"),
    )


@router.get("/usage.csv")
async def usage_csv(
    db: SessionDep,
    _: ConsoleAdminDep,
    start: DayQuery = None,
    end: DayQuery = None,
    group_by: Annotated[str, Query(max_length=16)] = "account",
) -> Response:
    first, last = parse_range(start, end)
    fields = parse_group_by(group_by if group_by in REPORT_GROUPINGS else "account")
    rows = await usage_report(db, start=first, end=last, group_by=fields)
    body = export.rows_to_csv(rows, export.report_columns(fields))
    filename = f"usage-{first.isoformat()}-{last.isoformat()}-by-{fields[0]}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/invoice")
async def invoice_page(
    request: Request,
    db: SessionDep,
    _: ConsoleAdminDep,
    account: Annotated[str, Query(max_length=64)],
    month: Annotated[str, Query(max_length=7)],
) -> Response:
    parse_month(month)
    holder = await accounts.get_account(db, account_id=account)
    bill = await invoice(db, account_id=account, month=month)
    return page(request, "admin/invoice.html", account=holder, invoice=bill, issued=utcnow())


@router.get("/audit")
async def audit_page(
    request: Request,
    db: SessionDep,
    _: ConsoleAdminDep,
    actor: ShortQuery = None,
    action: ShortQuery = None,
    target: ShortQuery = None,
    since: DayQuery = None,
    until: DayQuery = None,
    offset: OffsetQuery = 0,
) -> Response:
    rows = await audit.list_entries(
        db,
        actor=actor or None,
        action=action or None,
        target=target or None,
        since=utc_day(since, param="since"),
        until=_day_after(utc_day(until, param="until")),
        limit=PAGE_ROWS + 1,
        offset=offset,
    )
    entries, pager = page_of(request, rows, offset=offset)
    names = {audit.admin_actor(key.id): key.name for key in await admin.list_admin_keys(db)}
    names[audit.admin_actor(admin.ENV_ADMIN_ID)] = "SLUICEGATE_ADMIN_KEY"
    return page(
        request,
        "admin/audit.html",
        entries=entries,
        paging=pager,
        names=names,
        filters={
            "actor": actor or "",
            "action": action or "",
            "target": target or "",
            "since": since or "",
            "until": until or "",
        },
    )


def _day_after(moment: dt.datetime | None) -> dt.datetime | None:
    """`until` is inclusive on the page: entries of that whole day are shown."""
    return moment + dt.timedelta(days=1) if moment else None
