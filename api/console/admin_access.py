"""Admin console, at the door and the overview: sign in/out with an admin key, dashboard."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.console.csrf import require_csrf
from api.console.deps import ConsoleAdminDep
from api.console.forms import text_fields
from api.console.months import month_bounds, tokens
from api.console.render import page, redirect
from api.console.session_store import sign_in, sign_out
from api.deps import ServicesDep, SessionDep
from api.services import Services
from auth import accounts, waitlist
from auth.admin import find_admin, match_env_admin
from auth.console_sessions import Holder
from auth.tokens import hash_secret, is_admin_key
from billing.activity import outcomes_since
from billing.reports import usage_report
from core.db import utcnow
from core.errors import NotFound

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf)], include_in_schema=False)

TOP_ACCOUNTS = 5
MAX_KEY_CHARS = 200
NOT_ADMIN = "That is not an active admin key."


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return page(request, "admin/signin.html", error=None)


@router.post("/signin")
async def signin(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    raw = text_fields(await request.form(), ("key",)).get("key", "").strip()[:MAX_KEY_CHARS]
    admin = match_env_admin(raw, env_key_hash=services.admin_key_hash)
    if admin is None and is_admin_key(raw):
        admin = await find_admin(db, raw_key=raw)
    if admin is None:
        return page(request, "admin/signin.html", status_code=401, error=NOT_ADMIN)
    holder = Holder(
        role="admin",
        principal_id=admin.admin_id,
        credential_hash=hash_secret(raw),
        label=admin.name,
    )
    await sign_in(request, db, holder=holder)
    return redirect(request, "/admin", notice=f"Signed in as {admin.name}.")


@router.post("/signout")
async def signout(request: Request, db: SessionDep) -> Response:
    await sign_out(request, db)
    return redirect(request, "/admin/signin", notice="Signed out.", kind="info")


@router.get("")
async def dashboard(
    request: Request, db: SessionDep, services: ServicesDep, _: ConsoleAdminDep
) -> Response:
    now = utcnow()
    today = now.date()
    midnight = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
    first, following = month_bounds(today)
    today_rows = await usage_report(db, start=today, end=today + dt.timedelta(days=1), group_by=())
    month_rows = await usage_report(db, start=first, end=following, group_by=("account",))
    top = sorted(month_rows, key=tokens, reverse=True)[:TOP_ACCOUNTS]
    return page(
        request,
        "admin/dashboard.html",
        pending=await waitlist.count_applications(db, status="pending"),
        today=today_rows[0] if today_rows else None,
        outcomes=await outcomes_since(db, since=midnight),
        top=[(row, await _account_name(db, str(row["account_id"]))) for row in top],
        backends=_backends(services),
    )


async def _account_name(db: SessionDep, account_id: str) -> str:
    try:
        return (await accounts.get_account(db, account_id=account_id)).name
    except NotFound:
        return account_id


def _backends(services: Services) -> list[dict[str, object]] | None:
    """Each backend of each model as the router sees it; None before the models load."""
    router = services.generation.router if services.generation is not None else None
    if router is None or not router.started:
        return None
    return [
        {
            "model": model,
            "name": slot.name,
            "healthy": slot.healthy,
            "outstanding": slot.outstanding,
            "served": slot.served,
            "failures": slot.failures,
        }
        for model, route in router.routes.items()
        for slot in route.slots
    ]
