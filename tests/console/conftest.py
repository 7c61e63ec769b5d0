"""A fresh cookie jar per simulated browser, all on the one app of the `client` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

Browser = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def browsers(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[Browser]:
    """`browsers()` opens another browser (its own cookies) on the running app."""
    opened: list[httpx.AsyncClient] = []

    def open_browser() -> httpx.AsyncClient:
        browser = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        await browser.aclose()
