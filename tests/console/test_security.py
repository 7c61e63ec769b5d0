"""The console's security properties over HTTP: cookie, CSP, CSRF, escaping, who sees what."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from api.app import create_app
from core.config import Settings
from tests.access import Developer, admin_headers, onboard_developer
from tests.console.conftest import Browser
from tests.console.pages import csrf_token, sign_in_admin, sign_in_developer, submit

XSS = "<script>alert('owned')</script> I will build a <b>chat</b> bot."


async def test_pages_carry_a_strict_policy_and_a_locked_down_cookie(
    client: httpx.AsyncClient,
) -> None:
    home = await client.get("/console/")
    assert home.status_code == 200
    policy = home.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy
    assert home.headers["x-content-type-options"] == "nosniff"
    assert home.headers["cache-control"] == "no-store"
    cookie = home.headers["set-cookie"]
    assert cookie.startswith("sg_console=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=1800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # development: plain http on localhost
    assert "<script>" not in home.text.replace("<script src=", "")  # no inline script


async def test_public_pages_render_for_a_visitor(client: httpx.AsyncClient) -> None:
    for path in ("/console/", "/console/apply", "/console/status", "/console/signin"):
        assert (await client.get(path)).status_code == 200, path
    docs = await client.get("/console/docs")
    assert docs.status_code == 200
    assert "http://testserver/v1" in docs.text and '"model": "tiny"' in docs.text
    assert (await client.get("/console/admin/signin")).status_code == 200
    missing = await client.get("/console/nowhere")
    assert missing.status_code == 404 and "Not found" in missing.text


async def test_cookies_are_secure_outside_development(app_settings: Settings) -> None:
    production = app_settings.model_copy(update={"environment": "production"})
    app = create_app(production)  # the home page needs no services: no lifespan here
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as http:
        home = await http.get("/console/")
    assert home.status_code == 200
    assert "; Secure" in home.headers["set-cookie"]


async def test_a_post_without_the_sessions_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, browsers: Browser, admin_key: str
) -> None:
    fields = {"email": "csrf@example.com", "name": "Mallory", "use_case": "A forged application."}
    missing = await client.post("/console/apply", data=fields)
    assert missing.status_code == 403 and "security token" in missing.text
    other = browsers()
    foreign_token = csrf_token((await other.get("/console/apply")).text)  # another session's
    forged = await client.post("/console/apply", data={**fields, "csrf_token": foreign_token})
    assert forged.status_code == 403
    listed = await client.get("/admin/waitlist?status=pending", headers=admin_headers(admin_key))
    assert listed.json()["data"] == []


async def test_a_use_case_with_markup_is_shown_as_text(
    client: httpx.AsyncClient, browsers: Browser, admin_key: str
) -> None:
    fields = {"email": "xss@example.com", "name": "<img src=x onerror=alert(1)>", "use_case": XSS}
    applied = await submit(client, "/console/apply", "/console/apply", fields)
    assert applied.url.path == "/console/status", applied.text
    admin = browsers()
    await sign_in_admin(admin, admin_key)
    queue = await admin.get("/console/admin/waitlist")
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in queue.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in queue.text
    assert "<script>alert" not in queue.text and "<img src=x" not in queue.text


async def test_a_developer_session_is_refused_on_every_admin_page(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    await sign_in_developer(client, developer.key)
    for path in ("/console/admin", "/console/admin/waitlist", "/console/admin/usage"):
        refused = await client.get(path, follow_redirects=False)
        assert refused.status_code == 403, path
        assert "admin key" in refused.text
    token = csrf_token((await client.get("/console/keys")).text)
    decide = await client.post(
        "/console/admin/waitlist/decide",
        data={"csrf_token": token, "one": f"approve:{developer.application_id}"},
    )
    assert decide.status_code == 403


async def test_an_admin_key_does_not_open_the_developer_portal(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    refused = await submit(client, "/console/signin", "/console/signin", {"key": admin_key})
    assert refused.status_code == 401 and "admin key" in refused.text
    await sign_in_admin(client, admin_key)
    assert (await client.get("/console/keys")).status_code == 403


async def test_a_developer_cannot_touch_another_accounts_key(
    client: httpx.AsyncClient, app: FastAPI, admin_key: str, developer: Developer
) -> None:
    other = await onboard_developer(client, admin_key)
    await sign_in_developer(client, developer.key)
    token = csrf_token((await client.get("/console/keys")).text)
    attempt = await client.post(f"/console/keys/{other.key_id}/revoke", data={"csrf_token": token})
    assert attempt.status_code == 404
    still = await client.get("/v1/models", headers=other.headers)
    assert still.status_code == 200
    own_page = await client.get("/console/keys")
    assert other.key_id not in own_page.text and developer.account_id in own_page.text
