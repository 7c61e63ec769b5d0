"""Typed dependencies: everything a route needs arrives through one of these aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api.services import Services
from auth.admin import AdminPrincipal, find_admin, match_env_admin
from auth.keys import Principal
from auth.tokens import is_admin_key
from core.config import Settings
from core.errors import AuthenticationFailed, PermissionDenied
from core.inputs import INT32_MAX

NO_KEY_MESSAGE = (
    "You didn't provide an API key. Send it in an Authorization header: "
    "'Authorization: Bearer YOUR_KEY'."
)

# auto_error=False: a missing credential must be our 401 JSON, not FastAPI's 403 text.
_bearer = HTTPBearer(auto_error=False, description="API key, admin key or claim token")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


# async (though nothing awaits): FastAPI runs sync dependencies in a thread pool, which
# costs more than the rest of authentication on the hot path.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_app_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, rolled back on error."""
    async with services.sessions.begin() as session:
        yield session


# scope="function": the commit happens before the response goes out, so a client that reads
# right after a write sees it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed(NO_KEY_MESSAGE)
    return credentials.credentials.strip()


async def get_principal(request: Request, credentials: BearerDep) -> Principal:
    return await _authenticate(request, _presented(credentials))


ApiKeyDep = Annotated[Principal, Depends(get_principal)]


async def authenticate_request(request: Request) -> Principal:
    """`ApiKeyDep` without FastAPI's dependency solving, for the generation routes.

    Profiled under load, FastAPI solving these routes' dependencies (key, bearer scheme,
    service) took about a sixth of each request's CPU in the gateway; these routes call this
    instead and declare `API_KEY_SECURITY` so the OpenAPI document still shows the scheme.
    """
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return await _authenticate(request, credentials.strip() if scheme.lower() == "bearer" else "")


API_KEY_SECURITY: dict[str, object] = {"security": [{_bearer.scheme_name: []}]}


# The generation routes answer JSON, or Server-Sent Events with `"stream": true`.
JSON_OR_EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


def json_body_openapi(model: type[BaseModel]) -> dict[str, object]:
    """`openapi_extra` declaring `model` as the required JSON body of a `RequestRoute`.

    pydantic puts nested models under the schema's own `$defs`; inside the OpenAPI document
    a `#/$defs/…` reference resolves against the document's root, where there are none, so
    they are inlined (the generation bodies are not recursive).
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return inline({**definitions[ref.removeprefix("#/$defs/")], **rest})
        return {key: inline(value) for key, value in node.items()}

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}


async def _authenticate(request: Request, raw_key: str) -> Principal:
    if not raw_key:
        raise AuthenticationFailed(NO_KEY_MESSAGE)
    services: Services = request.app.state.services
    principal = await services.authenticator.authenticate(raw_key)
    request.state.principal = principal  # for middleware/loggers that want the account id
    return principal


async def get_admin(services: ServicesDep, credentials: BearerDep) -> AdminPrincipal:
    raw = _presented(credentials)
    env_admin = match_env_admin(raw, env_key_hash=services.admin_key_hash)
    if env_admin is not None:
        return env_admin
    if is_admin_key(raw):
        async with services.sessions() as session:
            found = await find_admin(session, raw_key=raw)
        if found is None:
            raise AuthenticationFailed("Incorrect admin key provided.")
        return found
    # A working developer key gets 403 (it is valid, just not here); anything else 401.
    await services.authenticator.authenticate(raw)
    raise PermissionDenied("This endpoint requires an admin key.")


AdminDep = Annotated[AdminPrincipal, Depends(get_admin)]


def get_claim_token(credentials: BearerDep) -> str:
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed(
            "Send the claim token from your waitlist application as 'Authorization: Bearer …'.",
            code="invalid_claim_token",
        )
    return credentials.credentials.strip()


ClaimTokenDep = Annotated[str, Depends(get_claim_token)]


async def guard_waitlist(request: Request, services: ServicesDep) -> None:
    """The per-IP limit on waitlist applications, when the limits package installed one."""
    if services.waitlist_guard is not None:
        client = request.client.host if request.client else "unknown"
        await services.waitlist_guard(client)


WaitlistGuardDep = Depends(guard_waitlist)


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 20,
    # Bounded: PostgreSQL's OFFSET is a BIGINT, and 2**63 was a 500 there.
    offset: Annotated[int, Query(ge=0, le=INT32_MAX, description="Items to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(get_page)]

# Ids in paths (`acct_…`, `key_…`, `wl_…`, tier names) are at most 40 characters; longer
# ones cannot exist, so they are refused before any lookup. (NUL: `api.middleware`.)
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
