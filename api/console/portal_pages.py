"""Developer portal, signed in: keys, usage, playground, docs.

Every page is scoped to the signed-in key's account (`DeveloperDep`); another account's key
is "not found", exactly as on `/v1/keys`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.charts import bar_chart
from api.console.context import console_of
from api.console.csrf import require_csrf
from api.console.deps import DeveloperDep
from api.console.forms import field_errors, text_fields, utc_day
from api.console.months import daily_tokens, month_bounds, tokens
from api.console.render import page, redirect
from api.deps import IdPath, ServicesDep, SessionDep
from api.generation.service import GenerationDep
from api.schemas import KeyCreate, KeyPublic
from auth import keys, operations
from billing.activity import last_used_by_key
from billing.reports import invoice, usage_report
from core.db import utcnow
from core.errors import SluicegateError

router = APIRouter(dependencies=[Depends(require_csrf)], include_in_schema=False)


async def _keys_page(
    request: Request,
    db: SessionDep,
    developer: DeveloperDep,
    generation: GenerationDep,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    rows = await keys.list_keys(db, account_id=developer.account_id)
    return page(
        request,
        "portal/keys.html",
        status_code=status_code,
        keys=[KeyPublic.of(row) for row in rows],
        last_used=await last_used_by_key(db, account_id=developer.account_id),
        models=[card["id"] for card in generation.visible_models(developer.principal)],
        developer=developer,
        errors=errors or {},
    )


@router.get("/keys")
async def keys_page(
    request: Request, db: SessionDep, developer: DeveloperDep, generation: GenerationDep
) -> Response:
    return await _keys_page(request, db, developer, generation)


@router.post("/keys")
async def create_key(
    request: Request, db: SessionDep, developer: DeveloperDep, generation: GenerationDep
) -> Response:
    form = await request.form()
    fields = text_fields(form, ("name",))
    models = [m for m in form.getlist("models") if isinstance(m, str) and m]
    try:
        body = KeyCreate.model_validate(
            {
                **fields,
                "expires_at": utc_day(str(form.get("expires_on") or ""), param="expires_on"),
                "allowed_models": models or None,
            }
        )
        created = await operations.create_key(
            db,
            actor=developer.account_id,
            account_id=developer.account_id,
            name=body.name,
            minted_by=developer.principal,
            expires_at=body.expires_at,
            allowed_models=body.allowed_models,
        )
    except ValidationError as invalid:
        errors = field_errors(invalid)
        return await _keys_page(request, db, developer, generation, status_code=400, errors=errors)
    except SluicegateError as refused:
        errors = {refused.param or "form": refused.message}
        return await _keys_page(request, db, developer, generation, status_code=400, errors=errors)
    return page(request, "portal/key_created.html", status_code=201, created=created, first=False)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    key_id: IdPath,
    request: Request,
    db: SessionDep,
    services: ServicesDep,
    developer: DeveloperDep,
) -> Response:
    key = await operations.revoke_key(
        db, actor=developer.account_id, key_id=key_id, account_id=developer.account_id
    )
    await db.commit()  # before invalidating, so no process reloads the old state
    await services.authenticator.invalidate()
    return redirect(request, "/keys", notice=f"Key {key.prefix}… is revoked.")


@router.get("/usage")
async def usage_page(request: Request, db: SessionDep, developer: DeveloperDep) -> Response:
    today = utcnow().date()
    first, following = month_bounds(today)
    account = developer.account_id
    by_day = await usage_report(
        db, start=first, end=following, group_by=("day",), account_id=account
    )
    by_model = await usage_report(
        db, start=first, end=following, group_by=("model",), account_id=account
    )
    bill = await invoice(db, account_id=account, month=first.strftime("%Y-%m"))
    used = sum(tokens(row) for row in by_model)
    return page(
        request,
        "portal/usage.html",
        developer=developer,
        month=first.strftime("%B %Y"),
        used=used,
        quota=developer.principal.tokens_per_month,
        day_chart=bar_chart(
            daily_tokens(by_day, first, following), title="Tokens per day", unit="tokens"
        ),
        model_chart=bar_chart(
            [(str(row["model"]), tokens(row)) for row in by_model],
            title="Tokens per model",
            unit="tokens",
        ),
        by_model=by_model,
        invoice=bill,
    )


@router.get("/playground")
async def playground(
    request: Request, developer: DeveloperDep, generation: GenerationDep
) -> Response:
    models = [card["id"] for card in generation.visible_models(developer.principal)]
    return page(request, "portal/playground.html", developer=developer, models=models)


@router.get("/docs")
async def docs(request: Request, generation: GenerationDep) -> Response:
    """Public: the quick-start, with this deployment's base URL and a model filled in."""
    base_url = f"{request.url.scheme}://{request.url.netloc}/v1"
    session = console_of(request).session
    label = session.label if session.role == "developer" else None
    model = next(iter(generation.model_ids), "MODEL")
    return page(request, "portal/docs.html", base_url=base_url, key_prefix=label, model=model)
