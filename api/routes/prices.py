"""Prices per model (admin key). Adding a price is audited; prices are never edited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field, StrictInt
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import AdminDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import StrictBody
from auth import audit
from auth.models import AuditEntry
from billing import export
from billing.models import Price
from billing.prices import MAX_MICROS_PER_1K, PriceCreate, list_prices, set_price
from core.inputs import Instant, column_length

router = APIRouter(prefix="/admin/prices", tags=["prices"], responses=ERROR_RESPONSES)

Micros = Annotated[StrictInt, Field(ge=0, le=MAX_MICROS_PER_1K)]


# The model is stored on the price and as the target of its audit row.
PricedModel = Annotated[
    str, Field(min_length=1, max_length=column_length(Price.model, AuditEntry.target))
]


class PriceCreateBody(StrictBody):
    """A new price for `model`, from `effective_from` (default: now; never in the past)."""

    model: PricedModel
    prompt_micros_per_1k: Micros
    completion_micros_per_1k: Micros
    effective_from: Instant | None = None


@router.get("")
async def get_prices(
    _: AdminDep, session: SessionDep, model: Annotated[str | None, Query(max_length=200)] = None
) -> dict[str, Any]:
    """Every price (optionally of one model), oldest first per model."""
    prices = await list_prices(session, model=model)
    return {"object": "list", "data": [export.price_dict(p) for p in prices]}


@router.post("", status_code=201)
async def post_price(admin: AdminDep, session: SessionDep, body: PriceCreateBody) -> dict[str, Any]:
    return export.price_dict(await add_price(session, actor=admin.actor, body=body))


async def add_price(session: AsyncSession, *, actor: str, body: PriceCreateBody) -> Price:
    """Set the price and audit it (also the console's "add price")."""
    price = await set_price(
        session,
        PriceCreate(
            model=body.model,
            prompt_micros_per_1k=body.prompt_micros_per_1k,
            completion_micros_per_1k=body.completion_micros_per_1k,
            effective_from=body.effective_from,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="prices.set",
        target=price.model,
        details=_audit_details(price.id, body, price.effective_from),
    )
    return price


def _audit_details(
    price_id: int, body: PriceCreateBody, effective_from: datetime
) -> dict[str, Any]:
    return {
        "price_id": price_id,
        "prompt_micros_per_1k": body.prompt_micros_per_1k,
        "completion_micros_per_1k": body.completion_micros_per_1k,
        "effective_from": effective_from.isoformat(),
    }
