"""Console sessions: signed, idle-limited, and ended by what ends the key."""

from __future__ import annotations

import time
from dataclasses import asdict

import httpx
from fastapi import FastAPI
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from api.console.session import SALT, ConsoleSession, SessionCodec
from auth import operations
from auth.admin import revoke_admin_key
from core.db import transaction
from tests.access import Developer, admin_headers
from tests.console.pages import csrf_token, notice, sign_in_admin, sign_in_developer, submit


def test_a_cookie_idle_past_the_timeout_or_tampered_with_is_refused() -> None:
    codec = SessionCodec("s" * 32, idle_timeout_s=60)
    session = ConsoleSession.fresh().signed_in("developer", credential="h" * 64, label="sk-x")
    assert codec.loads(codec.dumps(session)) == session

    class HourAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    stale = URLSafeTimedSerializer("s" * 32, salt=SALT, signer=HourAgo).dumps(asdict(session))
    assert codec.loads(stale) is None
    tampered = codec.dumps(session)[:-2] + "xx"
    assert codec.loads(tampered) is None
    assert SessionCodec("t" * 32, idle_timeout_s=60).loads(codec.dumps(session)) is None


async def test_sign_in_and_out(client: httpx.AsyncClient, developer: Developer) -> None:
    signed = await sign_in_developer(client, developer.key)
    assert developer.key[:11] in signed.text  # the prefix, as the header shows it
    assert developer.key not in signed.text  # never the key itself
    out = await submit(client, "/console/keys", "/console/signout", {})
    assert out.url.path == "/console/signin" and notice(out.text) == "Signed out."
    again = await client.get("/console/keys", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/console/signin"


async def test_a_wrong_key_is_a_clear_error(client: httpx.AsyncClient) -> None:
    refused = await submit(client, "/console/signin", "/console/signin", {"key": "sk-nope"})
    assert refused.status_code == 401
    assert "Incorrect API key" in refused.text


async def test_revoking_the_key_ends_its_session(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    await sign_in_developer(client, developer.key)
    assert (await client.get("/console/usage")).status_code == 200
    revoked = await client.delete(
        f"/admin/keys/{developer.key_id}", headers=admin_headers(admin_key)
    )
    assert revoked.status_code == 200
    ended = await client.get("/console/usage", follow_redirects=True)
    assert ended.url.path == "/console/signin"
    assert "revoked" in (notice(ended.text) or "")
    assert (await client.get("/console/keys", follow_redirects=False)).status_code == 303


async def test_suspending_the_account_ends_its_session(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    await sign_in_developer(client, developer.key)
    suspended = await client.patch(
        f"/admin/accounts/{developer.account_id}",
        json={"status": "suspended"},
        headers=admin_headers(admin_key),
    )
    assert suspended.status_code == 200
    ended = await client.get("/console/keys", follow_redirects=True)
    assert ended.url.path == "/console/signin" and "suspended" in (notice(ended.text) or "")


async def test_revoking_the_signed_in_key_from_the_keys_page_signs_out(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    await sign_in_developer(client, developer.key)
    page = await client.get("/console/keys")
    revoked = await client.post(
        f"/console/keys/{developer.key_id}/revoke",
        data={"csrf_token": csrf_token(page.text)},
        follow_redirects=True,
    )
    assert revoked.url.path == "/console/signin"
    assert (await client.get("/v1/models", headers=developer.headers)).status_code == 401


async def test_revoking_an_admin_key_ends_its_console_session(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    sessions = app.state.services.sessions
    async with transaction(sessions) as db:
        created = await operations.create_admin_key(db, actor="cli", name="ops on call")
    await sign_in_admin(client, created.raw)
    dashboard = await client.get("/console/admin")
    assert dashboard.status_code == 200 and "ops on call" in dashboard.text
    async with transaction(sessions) as db:
        await revoke_admin_key(db, admin_id=created.credential.id)
    ended = await client.get("/console/admin/waitlist", follow_redirects=True)
    assert ended.url.path == "/console/admin/signin"
    assert "admin key was revoked" in (notice(ended.text) or "")
