"""Admin usage reports and invoices (admin key), JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import AdminDep, SessionDep
from api.errors import ERROR_RESPONSES
from auth.accounts import get_account
from billing import export
from billing.reports import invoice, parse_group_by, parse_range, usage_report
from core.errors import InvalidRequest

router = APIRouter(prefix="/admin/reports", tags=["reports"], responses=ERROR_RESPONSES)

FORMATS = ("json", "csv")

# Query parameters, bounded like every other string the API takes (values: billing.reports).
DayQuery = Annotated[str | None, Query(max_length=10, description="A UTC day, YYYY-MM-DD")]
GroupByQuery = Annotated[
    str | None, Query(max_length=64, description="Comma-separated: account,key,model,day,month")
]
FormatQuery = Annotated[str, Query(max_length=8, description="json or csv")]
JSON_OR_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/csv": {}}, "description": "The report"}
}


def parse_format(value: str) -> str:
    if value not in FORMATS:
        raise InvalidRequest("format must be json or csv", param="format")
    return value


def usage_response(rows: list[Any], group_by: tuple[str, ...], fmt: str) -> Any:
    """The report as `{"object": "list", "data": [...]}` or as CSV with the same columns."""
    columns = export.report_columns(group_by)
    if fmt == "csv":
        return Response(export.rows_to_csv(rows, columns), media_type="text/csv; charset=utf-8")
    return export.usage_list(rows, columns)


@router.get("/usage", responses=JSON_OR_CSV)
async def usage(
    _: AdminDep,
    session: SessionDep,
    start: DayQuery = None,
    end: DayQuery = None,
    group_by: GroupByQuery = None,
    format: FormatQuery = "json",
) -> Any:
    """Usage of every account over whole UTC days [start, end), grouped as asked."""
    first, last = parse_range(start, end)
    fields, fmt = parse_group_by(group_by), parse_format(format)
    rows = await usage_report(session, start=first, end=last, group_by=fields)
    return usage_response(rows, fields, fmt)


@router.get("/invoice")
async def get_invoice(
    _: AdminDep,
    session: SessionDep,
    account: Annotated[str | None, Query(max_length=64)] = None,
    month: Annotated[str | None, Query(max_length=7, description="YYYY-MM")] = None,
) -> dict[str, Any]:
    """One account's month: a line per model (split by price) and the total."""
    if not account:
        raise InvalidRequest("account is required", param="account")
    if not month:
        raise InvalidRequest("month is required (YYYY-MM)", param="month")
    await get_account(session, account_id=account)
    return export.invoice_dict(await invoice(session, account_id=account, month=month))
