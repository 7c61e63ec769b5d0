"""Hostile form values (NUL, lone surrogates' UTF-8 stand-ins, huge text, far dates) are a page
with an error, never a 5xx, on both databases: the console calls the API's domain functions,
so the API's input rules must hold through its forms too."""

from __future__ import annotations

import httpx
import pytest

from tests.console.conftest import Browser
from tests.console.pages import sign_in_admin, submit

SURROGATE_BYTES = "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")
HOSTILE = ["evil\x00name", "x" * 100_000, SURROGATE_BYTES]


@pytest.mark.parametrize("value", HOSTILE, ids=["nul", "huge", "surrogate-bytes"])
async def test_an_application_with_a_hostile_field_is_refused_as_a_page(
    browsers: Browser, value: str
) -> None:
    for field in ("name", "use_case", "organization"):
        fields = {"email": "h@example.com", "name": "H", "use_case": "Testing input rules."}
        fields[field] = value
        answered = await submit(browsers(), "/console/apply", "/console/apply", fields)
        assert answered.status_code in (200, 400, 422), (field, answered.status_code)


async def test_admin_filters_with_hostile_values_are_not_server_errors(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await sign_in_admin(client, admin_key)
    for path, params in [
        ("/console/admin/waitlist", {"q": "a\x00b"}),
        ("/console/admin/waitlist", {"offset": str(2**70)}),
        ("/console/admin/accounts", {"q": "\x00"}),
        ("/console/admin/audit", {"actor": "\x00", "since": "9999-12-31T23:59:59-14:00"}),
        ("/console/admin/usage", {"start": "0001-01-01", "end": "9999-12-31"}),
        ("/console/admin/invoice", {"account": "\x00", "month": "9999-12"}),
    ]:
        answered = await client.get(path, params=params)
        assert answered.status_code in (200, 400, 422), (path, params, answered.status_code)
