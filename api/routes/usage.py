"""A developer's own usage (API key): the admin report's shape, limited to the key's account."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ApiKeyDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.routes.reports import (
    JSON_OR_CSV,
    DayQuery,
    FormatQuery,
    GroupByQuery,
    parse_format,
    usage_response,
)
from billing.reports import parse_group_by, parse_range, usage_report

router = APIRouter(prefix="/v1", tags=["usage"], responses=ERROR_RESPONSES)


@router.get("/usage", responses=JSON_OR_CSV)
async def usage(
    caller: ApiKeyDep,
    session: SessionDep,
    start: DayQuery = None,
    end: DayQuery = None,
    group_by: GroupByQuery = None,
    format: FormatQuery = "json",
) -> Any:
    """Usage of the calling key's account over whole UTC days [start, end)."""
    first, last = parse_range(start, end)
    fields, fmt = parse_group_by(group_by), parse_format(format)
    rows = await usage_report(
        session, start=first, end=last, group_by=fields, account_id=caller.account_id
    )
    return usage_response(rows, fields, fmt)
