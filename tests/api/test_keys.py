"""Developer keys: list, create (expiry, model scope), revoke, and the 401/403/404 paths."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.access import Developer, admin_headers, onboard_developer
from tests.api.test_waitlist import assert_error, bearer


def in_future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_list_shows_own_keys_without_secrets(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    listed = await client.get("/v1/keys", headers=developer.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    [key] = body["data"]
    assert key["id"] == developer.key_id and key["status"] == "active"
    assert developer.key not in listed.text
    assert "key" not in key and "key_hash" not in key
    assert developer.key.startswith(key["prefix"]) and len(key["prefix"]) < 16


async def test_create_with_expiry_and_model_scope(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    expires = in_future(days=30)
    created = await client.post(
        "/v1/keys",
        json={"name": "ci", "expires_at": expires, "allowed_models": ["tiny", "tiny"]},
        headers=developer.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith("sk-") and len(body["key"]) >= 3 + 43
    assert body["name"] == "ci"
    assert body["allowed_models"] == ["tiny"]
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat(expires)

    listed = await client.get("/v1/keys", headers=bearer(body["key"]))
    assert listed.status_code == 200
    assert {k["id"] for k in listed.json()["data"]} == {developer.key_id, body["id"]}
    assert body["key"] not in listed.text


async def test_create_without_body(client: httpx.AsyncClient, developer: Developer) -> None:
    created = await client.post("/v1/keys", headers=developer.headers)
    assert created.status_code == 201, created.text
    assert created.json()["allowed_models"] is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"expires_at": "2001-01-01T00:00:00+00:00"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no offset: ambiguous
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"allowed_models": []}, "allowed_models"),
        ({"allowed_models": [""]}, "allowed_models[0]"),
        ({"name": "n" * 101}, "name"),
        ({"tier": "scale"}, "tier"),
    ],
)
async def test_bad_key_requests_are_400(
    client: httpx.AsyncClient, developer: Developer, body: dict[str, object], param: str
) -> None:
    response = await client.post("/v1/keys", json=body, headers=developer.headers)
    assert_error(response, 400, param=param)


async def test_revoked_key_is_401_at_once(client: httpx.AsyncClient, developer: Developer) -> None:
    second = (await client.post("/v1/keys", headers=developer.headers)).json()
    revoked = await client.delete(f"/v1/keys/{second['id']}", headers=developer.headers)
    assert revoked.status_code == 200
    assert revoked.json() == {"id": second["id"], "object": "api_key", "deleted": True}

    refused = await client.get("/v1/keys", headers=bearer(second["key"]))
    error = assert_error(refused, 401, code="invalid_api_key")
    assert "revoked" in error["message"]
    listed = await client.get("/v1/keys", headers=developer.headers)
    statuses = {k["id"]: k["status"] for k in listed.json()["data"]}
    assert statuses == {developer.key_id: "active", second["id"]: "revoked"}


async def test_another_accounts_key_is_404(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    other = await onboard_developer(client, admin_key)
    response = await client.delete(f"/v1/keys/{other.key_id}", headers=developer.headers)
    assert_error(response, 404, code="key_not_found")
    still = await client.get("/v1/keys", headers=other.headers)
    assert still.status_code == 200


async def test_expired_key_is_401(client: httpx.AsyncClient, developer: Developer) -> None:
    short = await client.post(
        "/v1/keys", json={"expires_at": in_future(seconds=1)}, headers=developer.headers
    )
    key = short.json()["key"]
    assert (await client.get("/v1/keys", headers=bearer(key))).status_code == 200
    await asyncio.sleep(1.1)
    error = assert_error(await client.get("/v1/keys", headers=bearer(key)), 401)
    assert error["code"] == "invalid_api_key" and "expired" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer sk-" + "A" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer sk-" + "x" * 5000},
    ],
)
async def test_missing_or_unknown_keys_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/keys", headers=headers)
    error = assert_error(response, 401, code="invalid_api_key")
    assert error["type"] == "invalid_request_error"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_key_is_not_a_developer_key(client: httpx.AsyncClient, admin_key: str) -> None:
    assert_error(await client.get("/v1/keys", headers=admin_headers(admin_key)), 401)


async def test_suspended_account_is_403_until_reinstated(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    path = f"/admin/accounts/{developer.account_id}"
    suspend = await client.patch(
        path, json={"status": "suspended"}, headers=admin_headers(admin_key)
    )
    assert suspend.status_code == 200
    error = assert_error(await client.get("/v1/keys", headers=developer.headers), 403)
    assert error["code"] == "account_suspended"
    await client.patch(path, json={"status": "active"}, headers=admin_headers(admin_key))
    assert (await client.get("/v1/keys", headers=developer.headers)).status_code == 200
