"""Developer portal, before and at the door: home, apply, application status, claiming the
first key, signing in and out.

Each action calls what the JSON API calls (`auth.operations`, `auth.waitlist`, the
authenticator); this module only reads forms and picks the page.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.context import console_of
from api.console.csrf import require_csrf
from api.console.forms import field_errors, text_fields
from api.console.render import page, redirect
from api.console.session_store import sign_in, sign_out
from api.deps import ServicesDep, SessionDep, WaitlistGuardDep
from api.schemas import WaitlistCreate
from auth import operations, waitlist
from auth.console_sessions import Holder
from auth.tokens import display_prefix, hash_secret, is_admin_key
from core.errors import AuthenticationFailed, Conflict, PermissionDenied

router = APIRouter(dependencies=[Depends(require_csrf)], include_in_schema=False)

APPLY_FIELDS = ("email", "name", "organization", "use_case")
MAX_KEY_CHARS = 200


@router.get("/")
async def home(request: Request) -> Response:
    if console_of(request).session.role == "developer":
        return redirect(request, "/keys")
    return page(request, "portal/home.html")


@router.get("/apply")
async def apply_form(request: Request) -> Response:
    return page(request, "portal/apply.html", values={}, errors={})


@router.post("/apply", dependencies=[WaitlistGuardDep])
async def apply(request: Request, db: SessionDep) -> Response:
    values = text_fields(await request.form(), APPLY_FIELDS)
    try:
        body = WaitlistCreate.model_validate(values)
        new = await operations.apply_to_waitlist(
            db,
            email=str(body.email),
            name=body.name,
            organization=body.organization,
            use_case=body.use_case,
        )
    except ValidationError as invalid:
        return _apply_again(request, values, field_errors(invalid))
    except Conflict as conflict:
        return _apply_again(request, values, {conflict.param or "form": conflict.message})
    console = console_of(request)
    console.session = console.session.with_application(new.application.id, new.claim_token)
    return redirect(request, "/status", notice="Thank you: your application is in the queue.")


def _apply_again(request: Request, values: dict[str, str], errors: dict[str, str]) -> Response:
    return page(request, "portal/apply.html", status_code=400, values=values, errors=errors)


@router.get("/status")
async def status(request: Request, db: SessionDep) -> Response:
    console = console_of(request)
    kept = console.session.application
    if kept is None:
        return page(request, "portal/status_lookup.html", error=None)
    try:
        application = await waitlist.get_with_claim_token(
            db, application_id=kept[0], claim_token=kept[1]
        )
    except AuthenticationFailed:
        console.session = console.session.without_application()
        return page(request, "portal/status_lookup.html", error=None)
    return page(request, "portal/status.html", application=application, claim_token=kept[1])


@router.post("/status/lookup")
async def status_lookup(request: Request, db: SessionDep) -> Response:
    form = text_fields(await request.form(), ("application_id", "claim_token"))
    application_id = form.get("application_id", "").strip()[:64]
    token = form.get("claim_token", "").strip()[:MAX_KEY_CHARS]
    try:
        await waitlist.get_with_claim_token(db, application_id=application_id, claim_token=token)
    except AuthenticationFailed as refused:
        return page(request, "portal/status_lookup.html", status_code=401, error=refused.message)
    console = console_of(request)
    console.session = console.session.with_application(application_id, token)
    return redirect(request, "/status")


@router.post("/status/claim")
async def claim(request: Request, db: SessionDep) -> Response:
    kept = console_of(request).session.application
    if kept is None:
        return redirect(request, "/status", notice="Open your application first.", kind="error")
    created = await operations.claim_first_key(db, application_id=kept[0], claim_token=kept[1])
    return page(request, "portal/key_created.html", status_code=201, created=created, first=True)


@router.post("/status/forget")
async def forget_application(request: Request) -> Response:
    console = console_of(request)
    console.session = console.session.without_application()
    return redirect(request, "/status", notice="This browser no longer keeps your application.")


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return page(request, "portal/signin.html", error=None)


@router.post("/signin")
async def signin(request: Request, services: ServicesDep, db: SessionDep) -> Response:
    raw = text_fields(await request.form(), ("key",)).get("key", "").strip()
    if is_admin_key(raw):
        error = "That is an admin key: sign in to the admin console instead."
        return page(request, "portal/signin.html", status_code=401, error=error)
    try:
        principal = await services.authenticator.authenticate(raw[:MAX_KEY_CHARS])
    except (AuthenticationFailed, PermissionDenied) as refused:
        status_code = 403 if isinstance(refused, PermissionDenied) else 401
        return page(request, "portal/signin.html", status_code=status_code, error=refused.message)
    holder = Holder(
        role="developer",
        principal_id=principal.key_id,
        credential_hash=hash_secret(raw),
        label=display_prefix(raw),
        account_id=principal.account_id,
    )
    await sign_in(request, db, holder=holder)
    return redirect(request, "/keys", notice="Signed in.")


@router.post("/signout")
async def signout(request: Request, db: SessionDep) -> Response:
    await sign_out(request, db)
    return redirect(request, "/signin", notice="Signed out.", kind="info")
