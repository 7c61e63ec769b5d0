"""Long lists in pages of `PAGE_ROWS`: an `offset` query parameter and previous/next links
that keep the page's other filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Request

from core.inputs import INT32_MAX

PAGE_ROWS = 50
# Bounded like the API's own offsets (PostgreSQL's OFFSET is a BIGINT).
OffsetQuery = Annotated[int, Query(ge=0, le=INT32_MAX)]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pager:
    first: int  # 1-based number of the first row shown
    last: int
    previous_url: str | None
    next_url: str | None


def page_of(request: Request, rows: Sequence[T], *, offset: int) -> tuple[list[T], Pager]:
    """`rows` was fetched with `limit=PAGE_ROWS + 1`: the extra row says a next page exists."""
    shown = list(rows[:PAGE_ROWS])
    params = {k: v for k, v in request.query_params.items() if k != "offset"}

    def url(at: int) -> str:
        return f"{request.url.path}?{urlencode({**params, 'offset': at})}"

    pager = Pager(
        first=offset + 1 if shown else 0,
        last=offset + len(shown),
        previous_url=url(max(offset - PAGE_ROWS, 0)) if offset > 0 else None,
        next_url=url(offset + PAGE_ROWS) if len(rows) > PAGE_ROWS else None,
    )
    return shown, pager
