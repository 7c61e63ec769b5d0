"""Public waitlist: apply, check status and claim the first key with the claim token."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ClaimTokenDep, IdPath, SessionDep, WaitlistGuardDep
from api.errors import ERROR_RESPONSES
from api.schemas import KeyCreated, WaitlistCreate, WaitlistCreated, WaitlistStatus
from auth import operations, waitlist

router = APIRouter(prefix="/v1/waitlist", tags=["waitlist"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, dependencies=[WaitlistGuardDep])
async def apply_to_waitlist(body: WaitlistCreate, session: SessionDep) -> WaitlistCreated:
    """Join the waitlist. The claim token in the response is shown only here."""
    new = await operations.apply_to_waitlist(
        session,
        email=str(body.email),
        name=body.name,
        organization=body.organization,
        use_case=body.use_case,
    )
    application = new.application
    return WaitlistCreated(
        id=application.id,
        status=application.status,
        claim_token=new.claim_token,
        created_at=application.created_at,
    )


@router.get("/{application_id}")
async def application_status(
    application_id: IdPath, token: ClaimTokenDep, session: SessionDep
) -> WaitlistStatus:
    application = await waitlist.get_with_claim_token(
        session, application_id=application_id, claim_token=token
    )
    return WaitlistStatus.of(application)


@router.post("/{application_id}/claim", status_code=201)
async def claim_key(
    application_id: IdPath, token: ClaimTokenDep, session: SessionDep
) -> KeyCreated:
    """Once approved: the account's first API key, returned exactly once."""
    created = await operations.claim_first_key(
        session, application_id=application_id, claim_token=token
    )
    return KeyCreated.with_secret(created.key, created.raw)
