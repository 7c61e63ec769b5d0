"""The waitlist: apply, check status with the claim token, approve or reject, claim a key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.accounts import create_account
from auth.keys import CreatedKey, create_key
from auth.models import WaitlistApplication
from auth.tokens import hash_secret, new_claim_token, secret_matches
from core.db import contains_text, utcnow
from core.errors import AuthenticationFailed, Conflict, NotFound

ApplicationStatus = Literal["pending", "approved", "rejected"]
# Compared against when the id is unknown: no claim token hashes to it.
_NO_APPLICATION = "0" * 64


@dataclass(frozen=True, slots=True)
class NewApplication:
    application: WaitlistApplication
    claim_token: str  # shown once, in the response to the application


async def apply(
    session: AsyncSession,
    *,
    email: str,
    name: str,
    use_case: str,
    organization: str | None = None,
) -> NewApplication:
    email = email.strip().lower()
    duplicate = Conflict(
        "An application for this email address already exists.", param="email", code="duplicate"
    )
    if await session.scalar(
        select(WaitlistApplication.id).where(WaitlistApplication.email == email)
    ):
        raise duplicate
    token = new_claim_token()
    application = WaitlistApplication(
        email=email,
        name=name,
        organization=organization,
        use_case=use_case,
        status="pending",
        claim_token_hash=hash_secret(token),
        created_at=utcnow(),
    )
    session.add(application)
    try:
        await session.flush()  # two racing applications: the unique index picks the winner
    except IntegrityError as error:
        raise duplicate from error
    return NewApplication(application=application, claim_token=token)


async def get_application(session: AsyncSession, *, application_id: str) -> WaitlistApplication:
    application = await session.get(WaitlistApplication, application_id)
    if application is None:
        raise NotFound(
            f"No waitlist application with id {application_id!r}.",
            param="id",
            code="application_not_found",
        )
    return application


async def get_with_claim_token(
    session: AsyncSession, *, application_id: str, claim_token: str
) -> WaitlistApplication:
    """The application, if `claim_token` is its token.

    An unknown id gets the same 401 as a wrong token (and costs the same hash), so the
    public endpoints do not tell a stranger which application ids exist.
    """
    application = await session.get(WaitlistApplication, application_id)
    stored = application.claim_token_hash if application is not None else _NO_APPLICATION
    if not secret_matches(claim_token, stored) or application is None:
        raise AuthenticationFailed(
            "The claim token does not match this application.", code="invalid_claim_token"
        )
    return application


async def list_applications(
    session: AsyncSession,
    *,
    limit: int,
    offset: int = 0,
    status: ApplicationStatus | None = None,
    search: str | None = None,
) -> list[WaitlistApplication]:
    """Oldest first, so operators work the queue in order. `search`: a case-insensitive
    substring of the email, name, organization or use case."""
    query = select(WaitlistApplication)
    if status is not None:
        query = query.where(WaitlistApplication.status == status)
    if search:
        columns = (
            WaitlistApplication.email,
            WaitlistApplication.name,
            WaitlistApplication.organization,
            WaitlistApplication.use_case,
        )
        query = query.where(contains_text(columns, search))
    query = query.order_by(WaitlistApplication.created_at, WaitlistApplication.id)
    return list((await session.scalars(query.limit(limit).offset(offset))).all())


async def count_applications(session: AsyncSession, *, status: ApplicationStatus) -> int:
    query = select(func.count()).where(WaitlistApplication.status == status)
    return int(await session.scalar(query) or 0)


async def approve(session: AsyncSession, *, application_id: str, tier: str) -> WaitlistApplication:
    """Approve a pending application and open its account on `tier`."""
    application = await _pending(session, application_id=application_id)
    account = await create_account(
        session,
        email=application.email,
        name=application.name,
        organization=application.organization,
        tier=tier,
    )
    return await _decide(session, application, status="approved", account_id=account.id)


async def reject(
    session: AsyncSession, *, application_id: str, reason: str | None
) -> WaitlistApplication:
    application = await _pending(session, application_id=application_id)
    return await _decide(session, application, status="rejected", reason=reason)


async def claim(
    session: AsyncSession, *, application_id: str, claim_token: str
) -> tuple[WaitlistApplication, CreatedKey]:
    """Issue the account's first key, exactly once even under concurrent claims."""
    application = await get_with_claim_token(
        session, application_id=application_id, claim_token=claim_token
    )
    if application.status != "approved" or application.account_id is None:
        raise Conflict(
            f"This application is {application.status}; a key can be claimed once it is approved.",
            code=f"application_{application.status}",
        )
    # A conditional update is the arbiter: of two racing claims only one changes a row.
    claimed = await session.execute(
        update(WaitlistApplication)
        .where(WaitlistApplication.id == application.id, WaitlistApplication.claimed_at.is_(None))
        .values(claimed_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("This application's key has already been claimed.", code="already_claimed")
    created = await create_key(session, account_id=application.account_id, name="default")
    await session.refresh(application)
    return application, created


async def _pending(session: AsyncSession, *, application_id: str) -> WaitlistApplication:
    application = await get_application(session, application_id=application_id)
    if application.status != "pending":
        raise Conflict(
            f"This application is already {application.status}.",
            code=f"application_{application.status}",
        )
    return application


async def _decide(
    session: AsyncSession, application: WaitlistApplication, **values: str | None
) -> WaitlistApplication:
    """Move pending -> decided; a conditional update so two racing decisions cannot both win."""
    decided = await session.execute(
        update(WaitlistApplication)
        .where(WaitlistApplication.id == application.id, WaitlistApplication.status == "pending")
        .values(decided_at=utcnow(), **values)
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("This application was decided concurrently.", code="already_decided")
    await session.refresh(application)
    return application
