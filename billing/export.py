"""Reports as plain data: CSV text and JSON-ready dicts (shared by the HTTP API and the CLI)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from billing.models import Price
from billing.reports import GROUP_FIELDS, SUM_FIELDS, Invoice, PriceLine, Totals, UsageRow


def report_columns(group_by: Sequence[str]) -> list[str]:
    """The grouping fields in the order asked, then the sums."""
    return [GROUP_FIELDS[name] for name in group_by] + list(SUM_FIELDS)


def rows_to_csv(rows: Sequence[UsageRow], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def usage_list(rows: Sequence[UsageRow], columns: Sequence[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{c: row[c] for c in columns} for row in rows]}


def totals_dict(totals: Totals) -> dict[str, int]:
    return {
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cost_micros": totals.cost_micros,
    }


def _price_line(line: PriceLine) -> dict[str, Any]:
    return {
        "price_id": line.price_id,
        "prompt_micros_per_1k": line.prompt_micros_per_1k,
        "completion_micros_per_1k": line.completion_micros_per_1k,
        "effective_from": line.effective_from.isoformat() if line.effective_from else None,
        **totals_dict(line.usage),
    }


def invoice_dict(invoice: Invoice) -> dict[str, Any]:
    """One line per model (with its per-price parts) plus the total, money in micro-dollars."""
    return {
        "object": "invoice",
        "account_id": invoice.account_id,
        "month": invoice.month,
        "currency": "usd",
        "lines": [
            {
                "model": line.model,
                **totals_dict(line.usage),
                "prices": [_price_line(p) for p in line.prices],
            }
            for line in invoice.lines
        ],
        "total": totals_dict(invoice.total),
    }


def price_dict(price: Price) -> dict[str, Any]:
    return {
        "object": "price",
        "id": price.id,
        "model": price.model,
        "prompt_micros_per_1k": price.prompt_micros_per_1k,
        "completion_micros_per_1k": price.completion_micros_per_1k,
        "effective_from": price.effective_from.isoformat(),
        "created_at": price.created_at.isoformat(),
    }


def dollars(micros: int) -> str:
    """`1234567` -> `$1.234567`, exactly (integer arithmetic), for human-facing tables."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}${whole}.{fraction:06d}"
