"""Developer accounts: created on waitlist approval; suspended, reinstated, moved between tiers."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Account
from auth.tiers import require_tier
from core.db import contains_text, utcnow
from core.errors import Conflict, NotFound

AccountStatus = Literal["active", "suspended"]


async def create_account(
    session: AsyncSession, *, email: str, name: str, organization: str | None, tier: str
) -> Account:
    await require_tier(session, name=tier)
    existing = await session.scalar(select(Account.id).where(Account.email == email))
    if existing is not None:
        raise Conflict(f"An account for {email} already exists ({existing}).", param="email")
    now = utcnow()
    account = Account(
        email=email,
        name=name,
        organization=organization,
        tier=tier,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    return account


async def get_account(session: AsyncSession, *, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound(
            f"No account with id {account_id!r}.", param="account_id", code="account_not_found"
        )
    return account


async def list_accounts(
    session: AsyncSession,
    *,
    limit: int,
    offset: int = 0,
    status: AccountStatus | None = None,
    tier: str | None = None,
    search: str | None = None,
) -> list[Account]:
    """Oldest first. `search`: a case-insensitive substring of the id, email, name or
    organization."""
    query = select(Account)
    if status is not None:
        query = query.where(Account.status == status)
    if tier is not None:
        query = query.where(Account.tier == tier)
    if search:
        columns = (Account.id, Account.email, Account.name, Account.organization)
        query = query.where(contains_text(columns, search))
    query = query.order_by(Account.created_at, Account.id).limit(limit).offset(offset)
    return list((await session.scalars(query)).all())


async def update_account(
    session: AsyncSession,
    *,
    account_id: str,
    tier: str | None = None,
    status: AccountStatus | None = None,
) -> Account:
    """Change tier and/or status. The caller must invalidate the authentication caches."""
    account = await get_account(session, account_id=account_id)
    if tier is not None:
        await require_tier(session, name=tier)
        account.tier = tier
    if status is not None:
        account.status = status
    account.updated_at = utcnow()
    await session.flush()
    return account
