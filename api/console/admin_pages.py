"""Admin console: the waitlist queue and the accounts (keys, tier, caps, suspension).

Every action is the admin API's (`auth.operations`, `auth.key_limits`), audited as the
signed-in admin key; access changes are committed, then the key caches invalidated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.console.charts import bar_chart
from api.console.csrf import require_csrf
from api.console.deps import ConsoleAdminDep
from api.console.forms import field_errors, int_fields, text_fields
from api.console.months import daily_tokens, month_bounds, tokens
from api.console.paging import PAGE_ROWS, OffsetQuery, page_of
from api.console.render import page, redirect
from api.deps import IdPath, ServicesDep, SessionDep
from api.routes.key_limits import KeyLimitsUpdate
from api.schemas import AccountUpdate, ApproveRequest, KeyPublic, RejectRequest
from auth import accounts, keys, operations, tiers, waitlist
from auth.admin import AdminPrincipal
from auth.key_limits import KEY_LIMIT_FIELDS, set_key_limits
from billing.reports import usage_report
from core.db import transaction, utcnow
from core.errors import InvalidRequest, SluicegateError

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf)], include_in_schema=False)

Decision = Literal["approve", "reject"]
ApplicationStatus = Literal["pending", "approved", "rejected"]
SearchQuery = Annotated[str | None, Query(max_length=200)]


@router.get("/waitlist")
async def waitlist_page(
    request: Request,
    db: SessionDep,
    services: ServicesDep,
    _: ConsoleAdminDep,
    status: ApplicationStatus | Literal["all"] = "pending",
    q: SearchQuery = None,
    offset: OffsetQuery = 0,
) -> Response:
    rows = await waitlist.list_applications(
        db,
        status=None if status == "all" else status,
        search=q,
        limit=PAGE_ROWS + 1,
        offset=offset,
    )
    shown, pager = page_of(request, rows, offset=offset)
    return page(
        request,
        "admin/waitlist.html",
        applications=shown,
        paging=pager,
        status=status,
        statuses=("pending", "approved", "rejected", "all"),
        q=q or "",
        tiers=[tier.name for tier in await tiers.list_tiers(db)],
        default_tier=services.settings.default_tier,
    )


@router.post("/waitlist/decide")
async def decide(request: Request, services: ServicesDep, admin: ConsoleAdminDep) -> Response:
    """One application (a row's button, `one=approve:wl_…`) or the ticked ones (`ids`)."""
    form = await request.form()
    try:
        decision, ids = _what_to_decide(form.get("one"), form.get("action"), form.getlist("ids"))
    except InvalidRequest as nothing:
        return redirect(request, "/admin/waitlist", notice=nothing.message, kind="error")
    fields = text_fields(form, ("tier", "reason"))
    try:
        if decision == "approve":
            tier = ApproveRequest.model_validate({"tier": fields.get("tier")}).tier
            chosen = tier or services.settings.default_tier
        else:
            reason = RejectRequest.model_validate({"reason": fields.get("reason")}).reason
    except ValidationError as invalid:
        message = "; ".join(f"{k}: {v}" for k, v in field_errors(invalid).items())
        return redirect(request, "/admin/waitlist", notice=message, kind="error")
    done, failed = [], []
    for application_id in ids:
        try:
            # Each in its own transaction: one refused decision does not undo the others.
            async with transaction(services.sessions) as own:
                if decision == "approve":
                    await _approve(own, admin, application_id, chosen)
                else:
                    await _reject(own, admin, application_id, reason)
            done.append(application_id)
        except SluicegateError as refused:
            failed.append(f"{application_id}: {refused.message}")
    verb = "Approved" if decision == "approve" else "Rejected"
    notice = f"{verb} {len(done)} application(s)." + (" " + " ".join(failed) if failed else "")
    return redirect(
        request, "/admin/waitlist", notice=notice, kind="error" if failed else "success"
    )


def _what_to_decide(
    one: object, action: object, ticked: Sequence[object]
) -> tuple[Decision, list[str]]:
    if isinstance(one, str) and one:
        decision, _, application_id = one.partition(":")
        ids = [application_id]
    else:
        decision = str(action or "")
        ids = [i for i in ticked if isinstance(i, str) and i]
    if decision not in get_args(Decision):
        raise InvalidRequest("Choose approve or reject.", param="action")
    if not ids:
        raise InvalidRequest("Tick at least one application first.", param="ids")
    return decision, [i[:64] for i in ids]  # type: ignore[return-value]


async def _approve(db: AsyncSession, admin: AdminPrincipal, application_id: str, tier: str) -> None:
    await operations.approve_application(
        db, actor=admin.actor, application_id=application_id, tier=tier, actor_name=admin.name
    )


async def _reject(
    db: AsyncSession, admin: AdminPrincipal, application_id: str, reason: str | None
) -> None:
    await operations.reject_application(
        db, actor=admin.actor, application_id=application_id, reason=reason, actor_name=admin.name
    )


@router.get("/accounts")
async def accounts_page(
    request: Request,
    db: SessionDep,
    _: ConsoleAdminDep,
    q: SearchQuery = None,
    status: Literal["active", "suspended", "all"] = "all",
    offset: OffsetQuery = 0,
) -> Response:
    rows = await accounts.list_accounts(
        db,
        status=None if status == "all" else status,
        search=q,
        limit=PAGE_ROWS + 1,
        offset=offset,
    )
    shown, pager = page_of(request, rows, offset=offset)
    return page(
        request, "admin/accounts.html", accounts=shown, paging=pager, q=q or "", status=status
    )


@router.get("/accounts/{account_id}")
async def account_page(
    account_id: IdPath, request: Request, db: SessionDep, _: ConsoleAdminDep
) -> Response:
    account = await accounts.get_account(db, account_id=account_id)
    first, following = month_bounds(utcnow().date())
    by_day = await usage_report(
        db, start=first, end=following, group_by=("day",), account_id=account_id
    )
    key_rows = await keys.list_keys(db, account_id=account_id)
    return page(
        request,
        "admin/account.html",
        account=account,
        tier=await tiers.get_tier(db, name=account.tier),
        tiers=[tier.name for tier in await tiers.list_tiers(db)],
        keys=[(KeyPublic.of(row), row) for row in key_rows],
        limit_fields=KEY_LIMIT_FIELDS,
        used=sum(tokens(row) for row in by_day),
        month=first.strftime("%B %Y"),
        month_param=first.strftime("%Y-%m"),
        usage_chart=bar_chart(
            daily_tokens(by_day, first, following), title="Tokens per day", unit="tokens"
        ),
    )


@router.post("/accounts/{account_id}")
async def change_account(
    account_id: IdPath,
    request: Request,
    db: SessionDep,
    services: ServicesDep,
    admin: ConsoleAdminDep,
) -> Response:
    """Suspend, reinstate or move to another tier (the same as PATCH /admin/accounts/…)."""
    fields = text_fields(await request.form(), ("tier", "status"))
    try:
        body = AccountUpdate.model_validate(fields)
    except ValidationError as invalid:
        notice = "; ".join(field_errors(invalid).values())
        return redirect(request, f"/admin/accounts/{account_id}", notice=notice, kind="error")
    await operations.change_account(
        db, actor=admin.actor, account_id=account_id, tier=body.tier, status=body.status
    )
    await db.commit()
    await services.authenticator.invalidate()
    return redirect(request, f"/admin/accounts/{account_id}", notice="Account updated.")


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    key_id: IdPath, request: Request, db: SessionDep, services: ServicesDep, admin: ConsoleAdminDep
) -> Response:
    key = await operations.revoke_key(db, actor=admin.actor, key_id=key_id)
    await db.commit()
    await services.authenticator.invalidate()
    return redirect(
        request, f"/admin/accounts/{key.account_id}", notice=f"Key {key.prefix}… is revoked."
    )


@router.post("/keys/{key_id}/limits")
async def cap_key(
    key_id: IdPath, request: Request, db: SessionDep, services: ServicesDep, admin: ConsoleAdminDep
) -> Response:
    """Caps inside the tier; a blank field returns that limit to the tier."""
    form = await request.form()
    filled = int_fields(form, KEY_LIMIT_FIELDS)
    key = await keys.get_key(db, key_id=key_id)
    back = f"/admin/accounts/{key.account_id}"
    try:
        body = KeyLimitsUpdate.model_validate(
            {field: filled.get(field) for field in KEY_LIMIT_FIELDS}
        )
    except ValidationError as invalid:
        notice = "; ".join(f"{k}: {v}" for k, v in field_errors(invalid).items())
        return redirect(request, back, notice=notice, kind="error")
    await set_key_limits(db, actor=admin.actor, key_id=key_id, changes=body.changes())
    await db.commit()
    await services.authenticator.invalidate()
    return redirect(request, back, notice=f"Limits of {key.prefix}… saved.")
