"""Tiers: named bundles of rate limits and monthly quota."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Tier
from core.errors import Conflict, InvalidRequest, NotFound

LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent_requests",
    "tokens_per_month",
)


@dataclass(frozen=True, slots=True)
class TierLimits:
    requests_per_minute: int
    tokens_per_minute: int
    max_concurrent_requests: int
    tokens_per_month: int


async def list_tiers(session: AsyncSession) -> list[Tier]:
    return list((await session.scalars(select(Tier).order_by(Tier.requests_per_minute))).all())


async def get_tier(session: AsyncSession, *, name: str) -> Tier:
    tier = await session.get(Tier, name)
    if tier is None:
        raise NotFound(f"No tier named {name!r}.", param="name", code="tier_not_found")
    return tier


async def require_tier(session: AsyncSession, *, name: str, param: str = "tier") -> Tier:
    """Like `get_tier`, for a tier named inside a request body (a 400, not a 404)."""
    tier = await session.get(Tier, name)
    if tier is None:
        raise InvalidRequest(f"No tier named {name!r}.", param=param, code="tier_not_found")
    return tier


async def create_tier(session: AsyncSession, *, name: str, limits: TierLimits) -> Tier:
    if await session.get(Tier, name) is not None:
        raise Conflict(f"A tier named {name!r} already exists.", param="name")
    tier = Tier(name=name, **_as_dict(limits))
    session.add(tier)
    await session.flush()
    return tier


async def update_tier(session: AsyncSession, *, name: str, changes: dict[str, int]) -> Tier:
    tier = await get_tier(session, name=name)
    for field, value in changes.items():
        if field not in LIMIT_FIELDS:
            raise InvalidRequest(f"Unknown tier field {field!r}.", param=field)
        setattr(tier, field, value)
    await session.flush()
    return tier


def _as_dict(limits: TierLimits) -> dict[str, int]:
    return {field: getattr(limits, field) for field in LIMIT_FIELDS}
