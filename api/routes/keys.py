"""A developer's own API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from api.deps import ApiKeyDep, IdPath, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import Deleted, KeyCreate, KeyCreated, KeyPublic, ListPage
from auth import keys, operations

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)


@router.get("")
async def list_own_keys(principal: ApiKeyDep, session: SessionDep) -> ListPage[KeyPublic]:
    rows = await keys.list_keys(session, account_id=principal.account_id)
    return ListPage(data=[KeyPublic.of(row) for row in rows], has_more=False)


@router.post("", status_code=201)
async def create_own_key(
    principal: ApiKeyDep,
    session: SessionDep,
    body: Annotated[KeyCreate | None, Body()] = None,
) -> KeyCreated:
    """A new key for the caller's account; the secret is in this response only.

    Only an unrestricted key (every model, no expiry, no operator limits) may create keys.
    """
    body = body or KeyCreate()
    created = await operations.create_key(
        session,
        actor=principal.account_id,
        account_id=principal.account_id,
        name=body.name,
        minted_by=principal,
        expires_at=body.expires_at,
        allowed_models=body.allowed_models,
    )
    return KeyCreated.with_secret(created.key, created.raw)


@router.delete("/{key_id}")
async def revoke_own_key(
    key_id: IdPath, principal: ApiKeyDep, session: SessionDep, services: ServicesDep
) -> Deleted:
    """Revoke one of the caller's keys (another account's key is reported as not found)."""
    await operations.revoke_key(
        session, actor=principal.account_id, key_id=key_id, account_id=principal.account_id
    )
    await session.commit()  # before invalidating, so no process can reload the old state
    await services.authenticator.invalidate()
    return Deleted(id=key_id, object="api_key")
