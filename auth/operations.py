"""Operator and developer actions that change access, each written to the audit log.

The HTTP admin API and the CLI both call these, so an action is audited the same way
whichever door it came through. Callers commit, then invalidate the key caches when the
returned flag (or the docstring) says access changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from auth import accounts, admin, audit, keys, tiers, waitlist
from auth.models import Account, ApiKey, Tier, WaitlistApplication


async def apply_to_waitlist(
    session: AsyncSession, *, email: str, name: str, use_case: str, organization: str | None
) -> waitlist.NewApplication:
    new = await waitlist.apply(
        session, email=email, name=name, organization=organization, use_case=use_case
    )
    await audit.record(
        session, actor=audit.PUBLIC_ACTOR, action="waitlist.apply", target=new.application.id
    )
    return new


async def claim_first_key(
    session: AsyncSession, *, application_id: str, claim_token: str
) -> keys.CreatedKey:
    """The approved application's first key (once); the claim is audited as the account."""
    application, created = await waitlist.claim(
        session, application_id=application_id, claim_token=claim_token
    )
    await audit.record(
        session,
        actor=created.key.account_id,
        action="waitlist.claim",
        target=application.id,
        details={"key_id": created.key.id},
    )
    return created


async def approve_application(
    session: AsyncSession,
    *,
    actor: str,
    application_id: str,
    tier: str,
    actor_name: str | None = None,
) -> WaitlistApplication:
    """`actor_name`: the deciding admin key's name, kept in the audit row beside its id."""
    application = await waitlist.approve(session, application_id=application_id, tier=tier)
    details = {"account_id": application.account_id, "tier": tier}
    await audit.record(
        session,
        actor=actor,
        action="waitlist.approve",
        target=application.id,
        details=_named(details, actor_name),
    )
    return application


async def reject_application(
    session: AsyncSession,
    *,
    actor: str,
    application_id: str,
    reason: str | None,
    actor_name: str | None = None,
) -> WaitlistApplication:
    application = await waitlist.reject(session, application_id=application_id, reason=reason)
    await audit.record(
        session,
        actor=actor,
        action="waitlist.reject",
        target=application.id,
        details=_named({"reason": reason}, actor_name),
    )
    return application


def _named(details: dict[str, Any], actor_name: str | None) -> dict[str, Any]:
    return {**details, "admin_name": actor_name} if actor_name else details


async def change_account(
    session: AsyncSession,
    *,
    actor: str,
    account_id: str,
    tier: str | None = None,
    status: accounts.AccountStatus | None = None,
) -> Account:
    """Access changes: invalidate the key caches after commit."""
    before = await accounts.get_account(session, account_id=account_id)
    previous = {"tier": before.tier, "status": before.status}
    account = await accounts.update_account(
        session, account_id=account_id, tier=tier, status=status
    )
    changes = {
        field: {"from": previous[field], "to": getattr(account, field)}
        for field in ("tier", "status")
        if previous[field] != getattr(account, field)
    }
    await audit.record(
        session, actor=actor, action="account.update", target=account.id, details=changes
    )
    return account


async def revoke_key(
    session: AsyncSession, *, actor: str, key_id: str, account_id: str | None = None
) -> ApiKey:
    """With `account_id`, only that account's key. Invalidate the key caches after commit."""
    key = await keys.revoke_key(session, key_id=key_id, account_id=account_id)
    await audit.record(
        session,
        actor=actor,
        action="key.revoke",
        target=key.id,
        details={"account_id": key.account_id},
    )
    return key


async def create_key(
    session: AsyncSession,
    *,
    actor: str,
    account_id: str,
    name: str | None,
    minted_by: keys.Principal | None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
) -> keys.CreatedKey:
    """A key for `account_id`. `minted_by` is the key asking (None: the operator); a
    restricted key may not create keys (`keys.check_may_mint`)."""
    if minted_by is not None:
        keys.check_may_mint(minted_by)
    created = await keys.create_key(
        session,
        account_id=account_id,
        name=name,
        expires_at=expires_at,
        allowed_models=allowed_models,
    )
    details = {
        "account_id": account_id,
        "prefix": created.key.prefix,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "allowed_models": created.key.allowed_models,
    }
    await audit.record(
        session, actor=actor, action="key.create", target=created.key.id, details=details
    )
    return created


async def create_tier(
    session: AsyncSession, *, actor: str, name: str, limits: tiers.TierLimits
) -> Tier:
    tier = await tiers.create_tier(session, name=name, limits=limits)
    await audit.record(
        session, actor=actor, action="tier.create", target=name, details=_limits(tier)
    )
    return tier


async def update_tier(
    session: AsyncSession, *, actor: str, name: str, changes: dict[str, int]
) -> Tier:
    """Limits change for every account on the tier: invalidate the key caches after commit."""
    tier = await tiers.update_tier(session, name=name, changes=changes)
    await audit.record(session, actor=actor, action="tier.update", target=name, details=changes)
    return tier


async def create_admin_key(
    session: AsyncSession, *, actor: str, name: str
) -> admin.CreatedAdminKey:
    created = await admin.create_admin_key(session, name=name)
    await audit.record(
        session,
        actor=actor,
        action="admin_key.create",
        target=created.credential.id,
        details={"name": name, "prefix": created.credential.prefix},
    )
    return created


def _limits(tier: Tier) -> dict[str, int]:
    return {field: getattr(tier, field) for field in tiers.LIMIT_FIELDS}
