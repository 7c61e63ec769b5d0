"""Console sessions: kept on the server, ended by signing out, idling, or what ends the key."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from itsdangerous import URLSafeSerializer
from sqlalchemy import func, select

from api.console.session import COOKIE_NAME, SALT, ConsoleSession, SessionCodec
from auth import operations
from auth.admin import revoke_admin_key
from auth.console_sessions import Holder, new_session_id
from auth.models import ConsoleSessionRecord
from core.db import transaction
from tests.access import Developer, admin_headers
from tests.console.conftest import Browser
from tests.console.pages import csrf_token, notice, sign_in_admin, sign_in_developer, submit

HOLDER = Holder(role="developer", principal_id="key_1", credential_hash="c" * 64, label="sk-x")


def test_a_cookie_is_only_a_signed_session_id_and_anything_else_is_refused() -> None:
    codec = SessionCodec("s" * 32)
    session = ConsoleSession.fresh(application=("wl_1", "claim")).with_notice("Hi.")
    assert codec.loads(codec.dumps(session)) == session
    signed_in = session.signed_in(new_session_id(), HOLDER)
    cookie = codec.dumps(signed_in)
    # Who signed in is the row's to say: the cookie does not carry it.
    assert codec.loads(cookie) == replace(
        signed_in, role="visitor", credential=None, label=None, account_id=None
    )
    assert (
        HOLDER.credential_hash not in URLSafeSerializer("s" * 32, salt=SALT).loads(cookie).values()
    )
    assert codec.loads(cookie[:-2] + "xx") is None  # tampered
    assert SessionCodec("t" * 32).loads(cookie) is None  # another secret
    for garbage in ("\x00", cookie + "\x00", "a" * 100_000, cookie + "." * 5000):
        assert codec.loads(garbage) is None
    # Signed with our secret but not our shape (an id that is not one, a role smuggled in).
    forged = URLSafeSerializer("s" * 32, salt=SALT)
    assert (
        codec.loads(forged.dumps({"sid": "x\x00", "notice": None, "notice_kind": "info"})) is None
    )
    assert codec.loads(forged.dumps(["admin"])) is None


async def copied_cookie(browser: httpx.AsyncClient) -> dict[str, str]:
    """The session cookie as another machine would replay it (a stolen or copied cookie)."""
    value = browser.cookies.get(COOKIE_NAME)
    assert value
    return {"cookie": f"{COOKIE_NAME}={value}"}


async def replay(app: FastAPI, path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        return await other.get(path, headers=headers, follow_redirects=False)


async def stored_sessions(app: FastAPI) -> int:
    async with transaction(app.state.services.sessions) as db:
        return int(await db.scalar(select(func.count()).select_from(ConsoleSessionRecord)) or 0)


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
    client: httpx.AsyncClient, app: FastAPI, developer: Developer, admin_key: str
) -> None:
    await sign_in_developer(client, developer.key)
    copy = await copied_cookie(client)
    assert (await client.get("/console/usage")).status_code == 200
    revoked = await client.delete(
        f"/admin/keys/{developer.key_id}", headers=admin_headers(admin_key)
    )
    assert revoked.status_code == 200
    ended = await client.get("/console/usage", follow_redirects=True)
    assert ended.url.path == "/console/signin"
    assert "revoked" in (notice(ended.text) or "")
    assert (await client.get("/console/keys", follow_redirects=False)).status_code == 303
    assert await stored_sessions(app) == 0  # ended for every copy, not just this browser
    assert (await replay(app, "/console/usage", copy)).status_code == 303


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
    assert await stored_sessions(app) == 0


async def test_a_cookie_replayed_after_sign_out_is_signed_out(
    client: httpx.AsyncClient, app: FastAPI, developer: Developer
) -> None:
    await sign_in_developer(client, developer.key)
    copy = await copied_cookie(client)
    assert (await replay(app, "/console/keys", copy)).status_code == 200  # the copy works...
    await submit(client, "/console/keys", "/console/signout", {})
    assert await stored_sessions(app) == 0
    replayed = await replay(app, "/console/keys", copy)  # ...until the owner signs out
    assert replayed.status_code == 303 and replayed.headers["location"] == "/console/signin"
    usage = await replay(app, "/console/usage", copy)
    assert usage.status_code == 303 and developer.key[:11] not in usage.text


async def test_an_admin_cookie_replayed_after_sign_out_is_signed_out(
    client: httpx.AsyncClient, app: FastAPI, admin_key: str
) -> None:
    await sign_in_admin(client, admin_key)
    copy = await copied_cookie(client)
    assert (await replay(app, "/console/admin/waitlist", copy)).status_code == 200
    await submit(client, "/console/admin", "/console/admin/signout", {})
    replayed = await replay(app, "/console/admin/waitlist", copy)
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/console/admin/signin"


async def test_the_idle_timeout_is_the_servers_not_the_cookies(
    client: httpx.AsyncClient, app: FastAPI, developer: Developer
) -> None:
    await sign_in_developer(client, developer.key)
    assert (await client.get("/console/keys")).status_code == 200
    # The server's clock moves past the idle timeout (the app's is 30 minutes) since the last
    # page; the browser's cookie is as fresh as ever.
    idle = dt.timedelta(seconds=app.state.services.settings.console_idle_timeout_s)
    async with transaction(app.state.services.sessions) as db:
        row = await db.scalar(select(ConsoleSessionRecord))
        assert row is not None
        row.last_seen_at -= idle
        row.expires_at -= idle
    ended = await client.get("/console/keys", follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == "/console/signin"
    assert await stored_sessions(app) == 0  # the expired row is gone


async def test_two_sessions_of_one_key_are_independent(
    client: httpx.AsyncClient, browsers: Browser, app: FastAPI, developer: Developer
) -> None:
    laptop, phone = client, browsers()
    await sign_in_developer(laptop, developer.key)
    await sign_in_developer(phone, developer.key)
    assert laptop.cookies.get(COOKIE_NAME) != phone.cookies.get(COOKIE_NAME)
    assert await stored_sessions(app) == 2
    await submit(laptop, "/console/keys", "/console/signout", {})
    assert (await laptop.get("/console/keys", follow_redirects=False)).status_code == 303
    assert (await phone.get("/console/keys", follow_redirects=False)).status_code == 200
    assert await stored_sessions(app) == 1


async def test_signing_in_again_replaces_the_browsers_session(
    client: httpx.AsyncClient, app: FastAPI, developer: Developer
) -> None:
    await sign_in_developer(client, developer.key)
    before = await copied_cookie(client)
    await sign_in_developer(client, developer.key)
    assert await stored_sessions(app) == 1
    assert (await replay(app, "/console/keys", before)).status_code == 303


@pytest.mark.parametrize(
    "cookie",
    ["a" * 8000, "%00", "\x00abc", "e30.garbage", "sg_console=;;;"],
)
async def test_a_garbled_cookie_is_a_visitor_not_an_error(
    client: httpx.AsyncClient, app: FastAPI, cookie: str
) -> None:
    home = await replay(app, "/console/", {"cookie": f"{COOKIE_NAME}={cookie}"})
    assert home.status_code == 200 and "Sign in" in home.text
    keys = await replay(app, "/console/keys", {"cookie": f"{COOKIE_NAME}={cookie}"})
    assert keys.status_code == 303
