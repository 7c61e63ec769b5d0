"""Driving the console over HTTP like a browser without JavaScript: forms, tokens, cookies."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NOTICE = re.compile(r'role="status">([^<]*)<')


def csrf_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def notice(html: str) -> str | None:
    found = NOTICE.search(html)
    return found.group(1) if found else None


async def submit(
    browser: httpx.AsyncClient, page: str, action: str, fields: dict[str, str | list[str]]
) -> httpx.Response:
    """Open `page`, then post `fields` to `action` with the page's CSRF token, following the
    redirect like a browser."""
    opened = await browser.get(page)
    assert opened.status_code == 200, opened.text
    data = {"csrf_token": csrf_token(opened.text), **fields}
    return await browser.post(action, data=data, follow_redirects=True)


async def sign_in_developer(browser: httpx.AsyncClient, key: str) -> httpx.Response:
    signed = await submit(browser, "/console/signin", "/console/signin", {"key": key})
    assert signed.status_code == 200 and signed.url.path == "/console/keys", signed.text
    return signed


async def sign_in_admin(browser: httpx.AsyncClient, admin_key: str) -> httpx.Response:
    signed = await submit(
        browser, "/console/admin/signin", "/console/admin/signin", {"key": admin_key}
    )
    assert signed.status_code == 200 and signed.url.path == "/console/admin", signed.text
    return signed
