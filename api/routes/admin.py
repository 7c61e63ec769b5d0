"""The operator's API (admin key): waitlist decisions, accounts, keys, tiers, audit log.

Every action goes through `auth.operations`, which writes the audit row.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query

from api.deps import AdminDep, IdPath, PageDep, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import (
    AccountPublic,
    AccountUpdate,
    ApproveRequest,
    AuditPublic,
    Deleted,
    KeyPublic,
    ListPage,
    RejectRequest,
    TierCreate,
    TierPublic,
    TierUpdate,
    WaitlistAdminView,
    page_of,
)
from auth import accounts, audit, keys, operations, tiers, waitlist
from auth.tiers import TierLimits

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("/waitlist")
async def list_waitlist(
    _: AdminDep,
    session: SessionDep,
    page: PageDep,
    status: Literal["pending", "approved", "rejected"] | None = None,
) -> ListPage[WaitlistAdminView]:
    """Applications, oldest first."""
    rows = await waitlist.list_applications(
        session, status=status, limit=page.limit + 1, offset=page.offset
    )
    return ListPage(**page_of(rows, page.limit, WaitlistAdminView.of))


@router.post("/waitlist/{application_id}/approve")
async def approve_application(
    application_id: IdPath,
    admin: AdminDep,
    session: SessionDep,
    services: ServicesDep,
    body: Annotated[ApproveRequest | None, Body()] = None,
) -> WaitlistAdminView:
    tier = (body.tier if body else None) or services.settings.default_tier
    application = await operations.approve_application(
        session, actor=admin.actor, application_id=application_id, tier=tier, actor_name=admin.name
    )
    return WaitlistAdminView.of(application)


@router.post("/waitlist/{application_id}/reject")
async def reject_application(
    application_id: IdPath,
    admin: AdminDep,
    session: SessionDep,
    body: Annotated[RejectRequest | None, Body()] = None,
) -> WaitlistAdminView:
    reason = body.reason if body else None
    application = await operations.reject_application(
        session,
        actor=admin.actor,
        application_id=application_id,
        reason=reason,
        actor_name=admin.name,
    )
    return WaitlistAdminView.of(application)


@router.get("/accounts")
async def list_accounts(
    _: AdminDep,
    session: SessionDep,
    page: PageDep,
    status: Literal["active", "suspended"] | None = None,
    tier: Annotated[str | None, Query(max_length=32)] = None,
) -> ListPage[AccountPublic]:
    rows = await accounts.list_accounts(
        session, status=status, tier=tier, limit=page.limit + 1, offset=page.offset
    )
    return ListPage(**page_of(rows, page.limit, AccountPublic.of))


@router.get("/accounts/{account_id}")
async def get_account(account_id: IdPath, _: AdminDep, session: SessionDep) -> AccountPublic:
    return AccountPublic.of(await accounts.get_account(session, account_id=account_id))


@router.patch("/accounts/{account_id}")
async def update_account(
    account_id: IdPath,
    body: AccountUpdate,
    admin: AdminDep,
    session: SessionDep,
    services: ServicesDep,
) -> AccountPublic:
    """Change tier and/or suspend/reinstate; effective on every process within seconds."""
    account = await operations.change_account(
        session, actor=admin.actor, account_id=account_id, tier=body.tier, status=body.status
    )
    await session.commit()
    await services.authenticator.invalidate()
    return AccountPublic.of(account)


@router.get("/accounts/{account_id}/keys")
async def list_account_keys(
    account_id: IdPath, _: AdminDep, session: SessionDep
) -> ListPage[KeyPublic]:
    await accounts.get_account(session, account_id=account_id)  # 404 for unknown accounts
    rows = await keys.list_keys(session, account_id=account_id)
    return ListPage(data=[KeyPublic.of(row) for row in rows], has_more=False)


@router.delete("/keys/{key_id}")
async def revoke_key(
    key_id: IdPath, admin: AdminDep, session: SessionDep, services: ServicesDep
) -> Deleted:
    await operations.revoke_key(session, actor=admin.actor, key_id=key_id)
    await session.commit()
    await services.authenticator.invalidate()
    return Deleted(id=key_id, object="api_key")


@router.get("/tiers")
async def list_tiers(_: AdminDep, session: SessionDep) -> ListPage[TierPublic]:
    rows = await tiers.list_tiers(session)
    return ListPage(data=[TierPublic.of(row) for row in rows], has_more=False)


@router.post("/tiers", status_code=201)
async def create_tier(body: TierCreate, admin: AdminDep, session: SessionDep) -> TierPublic:
    limits = TierLimits(**body.model_dump(exclude={"name"}))
    tier = await operations.create_tier(session, actor=admin.actor, name=body.name, limits=limits)
    return TierPublic.of(tier)


@router.patch("/tiers/{name}")
async def update_tier(
    name: IdPath, body: TierUpdate, admin: AdminDep, session: SessionDep, services: ServicesDep
) -> TierPublic:
    tier = await operations.update_tier(
        session, actor=admin.actor, name=name, changes=body.changes()
    )
    await session.commit()
    await services.authenticator.invalidate()
    return TierPublic.of(tier)


@router.get("/audit")
async def list_audit(
    _: AdminDep,
    session: SessionDep,
    page: PageDep,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=80)] = None,
) -> ListPage[AuditPublic]:
    """Newest first."""
    rows = await audit.list_entries(
        session,
        actor=actor,
        action=action,
        target=target,
        limit=page.limit + 1,
        offset=page.offset,
    )
    return ListPage(**page_of(rows, page.limit, AuditPublic.of))
