"""Who is looking at a console page, checked against the database on every request.

`DeveloperDep` and `ConsoleAdminDep` re-read the signed-in key (by the hash the session's
row holds, `api.console.session_store`): a revoked or expired key, a suspended account or a
revoked admin key ends the session there and then (its row is deleted). A developer session
on an admin page is a 403, never a redirect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.console.context import console_of
from api.console.session_store import end_ended_session
from api.deps import ServicesDep, SessionDep
from auth.admin import AdminPrincipal, find_admin_by_hash, match_env_admin_hash
from auth.authenticator import admit
from auth.keys import Principal, find_key_record
from core.errors import AuthenticationFailed, PermissionDenied

DEVELOPERS_ONLY = "This page belongs to a developer account; you are signed in as an operator."
ADMINS_ONLY = "The admin console needs an admin key; you are signed in with a developer key."


class SignInRequired(Exception):
    """Not signed in (or the session just ended): the page sends the browser to sign in."""

    def __init__(self, where: str, reason: str | None = None) -> None:
        super().__init__(reason or "Sign in to continue.")
        self.where = where  # "developer" or "admin"
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Developer:
    principal: Principal
    key_prefix: str | None

    @property
    def account_id(self) -> str:
        return self.principal.account_id


async def get_developer(request: Request, db: SessionDep) -> Developer:
    console = console_of(request)
    session = console.session
    if session.role == "admin":
        raise PermissionDenied(
            "This page belongs to a developer account; you are signed in as an operator."
        )
    if session.role != "developer" or session.credential is None:
        raise SignInRequired("developer")
    try:
        principal = admit(await find_key_record(db, key_hash=session.credential))
    except (AuthenticationFailed, PermissionDenied) as ended:
        await end_ended_session(request)
        raise SignInRequired("developer", f"Your session ended: {ended.message}") from None
    return Developer(principal=principal, key_prefix=session.label)


DeveloperDep = Annotated[Developer, Depends(get_developer)]


async def get_console_admin(
    request: Request, db: SessionDep, services: ServicesDep
) -> AdminPrincipal:
    console = console_of(request)
    session = console.session
    if session.role == "developer":
        raise PermissionDenied(
            "The admin console needs an admin key; you are signed in with a developer key."
        )
    if session.role != "admin" or session.credential is None:
        raise SignInRequired("admin")
    admin = match_env_admin_hash(session.credential, env_key_hash=services.admin_key_hash)
    if admin is None:
        admin = await find_admin_by_hash(db, key_hash=session.credential)
    if admin is None:
        await end_ended_session(request)
        raise SignInRequired("admin", "Your session ended: the admin key was revoked.")
    return admin


ConsoleAdminDep = Annotated[AdminPrincipal, Depends(get_console_admin)]
