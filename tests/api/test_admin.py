"""The admin API: role checks, waitlist decisions, accounts, keys, tiers, audit rows."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.services import Services
from auth.operations import create_admin_key
from core.db import transaction
from tests.access import USE_CASE, Developer, admin_headers, onboard_developer
from tests.api.test_waitlist import apply, assert_error, bearer

ADMIN_GETS = [
    "/admin/waitlist",
    "/admin/accounts",
    "/admin/accounts/acct_x",
    "/admin/accounts/acct_x/keys",
    "/admin/tiers",
    "/admin/audit",
]


async def audit_actions(client: httpx.AsyncClient, admin_key: str, target: str) -> list[str]:
    response = await client.get(
        "/admin/audit", params={"target": target}, headers=admin_headers(admin_key)
    )
    assert response.status_code == 200
    return [entry["action"] for entry in response.json()["data"]]


@pytest.mark.parametrize("path", ADMIN_GETS)
async def test_developer_key_is_403_and_no_key_401(
    client: httpx.AsyncClient, developer: Developer, path: str
) -> None:
    error = assert_error(await client.get(path, headers=developer.headers), 403)
    assert error["code"] == "permission_denied"
    assert_error(await client.get(path), 401, code="invalid_api_key")
    assert_error(await client.get(path, headers=bearer("sk-admin-wrong")), 401)


async def test_mutations_need_an_admin_key(client: httpx.AsyncClient, developer: Developer) -> None:
    attempts = [
        client.post("/admin/waitlist/wl_x/approve", headers=developer.headers),
        client.patch(
            f"/admin/accounts/{developer.account_id}",
            json={"status": "suspended"},
            headers=developer.headers,
        ),
        client.delete(f"/admin/keys/{developer.key_id}", headers=developer.headers),
        client.patch(
            "/admin/tiers/free", json={"requests_per_minute": 1}, headers=developer.headers
        ),
    ]
    for attempt in attempts:
        assert_error(await attempt, 403)
    assert (await client.get("/v1/keys", headers=developer.headers)).status_code == 200


async def test_waitlist_listing_is_filtered_paginated_and_oldest_first(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    ids = [(await apply(client, email=f"u{i}@example.com"))["id"] for i in range(5)]
    await client.post(f"/admin/waitlist/{ids[1]}/reject", headers=admin_headers(admin_key))
    first = await client.get(
        "/admin/waitlist",
        params={"status": "pending", "limit": 2},
        headers=admin_headers(admin_key),
    )
    assert [a["id"] for a in first.json()["data"]] == [ids[0], ids[2]]
    assert first.json()["has_more"] is True
    rest = await client.get(
        "/admin/waitlist",
        params={"status": "pending", "limit": 2, "offset": 2},
        headers=admin_headers(admin_key),
    )
    assert [a["id"] for a in rest.json()["data"]] == [ids[3], ids[4]]
    assert rest.json()["has_more"] is False
    rejected = await client.get(
        "/admin/waitlist", params={"status": "rejected"}, headers=admin_headers(admin_key)
    )
    assert [a["id"] for a in rejected.json()["data"]] == [ids[1]]
    assert rejected.json()["data"][0]["use_case"] == USE_CASE
    assert "claim_token" not in first.text
    bad = await client.get(
        "/admin/waitlist", params={"status": "maybe"}, headers=admin_headers(admin_key)
    )
    assert_error(bad, 400, param="status")
    assert_error(
        await client.get("/admin/waitlist", params={"limit": 0}, headers=admin_headers(admin_key)),
        400,
        param="limit",
    )


async def test_approve_opens_an_account_on_the_tier(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    application = await apply(client, organization="Org")
    path = f"/admin/waitlist/{application['id']}/approve"
    bad_tier = await client.post(path, json={"tier": "platinum"}, headers=admin_headers(admin_key))
    assert_error(bad_tier, 400, param="tier")
    approved = await client.post(path, json={"tier": "scale"}, headers=admin_headers(admin_key))
    assert approved.status_code == 200, approved.text
    account_id = approved.json()["account_id"]
    account = await client.get(f"/admin/accounts/{account_id}", headers=admin_headers(admin_key))
    assert account.json() | {"created_at": None, "updated_at": None} == {
        "id": account_id,
        "object": "account",
        "email": "ada@example.com",
        "name": "Ada",
        "organization": "Org",
        "tier": "scale",
        "status": "active",
        "created_at": None,
        "updated_at": None,
    }
    twice = await client.post(path, headers=admin_headers(admin_key))
    assert_error(twice, 409, code="application_approved")
    reject_now = await client.post(
        f"/admin/waitlist/{application['id']}/reject", headers=admin_headers(admin_key)
    )
    assert_error(reject_now, 409)
    missing = await client.post("/admin/waitlist/wl_nope/approve", headers=admin_headers(admin_key))
    assert_error(missing, 404)
    assert await audit_actions(client, admin_key, application["id"]) == [
        "waitlist.approve",
        "waitlist.apply",
    ]


async def test_accounts_list_get_patch_and_keys(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    headers = admin_headers(admin_key)
    listed = await client.get("/admin/accounts", headers=headers)
    assert [a["id"] for a in listed.json()["data"]] == [developer.account_id]
    path = f"/admin/accounts/{developer.account_id}"
    moved = await client.patch(path, json={"tier": "standard"}, headers=headers)
    assert moved.json()["tier"] == "standard"
    assert_error(await client.patch(path, json={}, headers=headers), 400)
    assert_error(
        await client.patch(path, json={"status": "gone"}, headers=headers), 400, param="status"
    )
    assert_error(
        await client.patch(path, json={"tier": "nope"}, headers=headers), 400, param="tier"
    )
    assert_error(await client.get("/admin/accounts/acct_nope", headers=headers), 404)
    suspended = await client.get("/admin/accounts", params={"status": "suspended"}, headers=headers)
    assert suspended.json()["data"] == []

    keys = await client.get(f"{path}/keys", headers=headers)
    assert [k["id"] for k in keys.json()["data"]] == [developer.key_id]
    assert developer.key not in keys.text
    assert_error(await client.get("/admin/accounts/acct_nope/keys", headers=headers), 404)
    audit = await client.get(
        "/admin/audit", params={"target": developer.account_id}, headers=headers
    )
    [entry] = audit.json()["data"]
    assert entry["action"] == "account.update"
    assert entry["actor"] == "admin:env"
    assert entry["details"] == {"tier": {"from": "free", "to": "standard"}}


async def test_admin_revokes_any_key(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    revoked = await client.delete(
        f"/admin/keys/{developer.key_id}", headers=admin_headers(admin_key)
    )
    assert revoked.status_code == 200
    assert_error(
        await client.get("/v1/keys", headers=developer.headers), 401, code="invalid_api_key"
    )
    assert_error(await client.delete("/admin/keys/key_nope", headers=admin_headers(admin_key)), 404)
    assert await audit_actions(client, admin_key, developer.key_id) == ["key.revoke"]


async def test_tiers_list_create_patch(client: httpx.AsyncClient, admin_key: str) -> None:
    headers = admin_headers(admin_key)
    names = [t["name"] for t in (await client.get("/admin/tiers", headers=headers)).json()["data"]]
    assert names == ["free", "standard", "scale"]
    limits: dict[str, Any] = {
        "requests_per_minute": 5,
        "tokens_per_minute": 500,
        "max_concurrent_requests": 1,
        "tokens_per_month": 10_000,
    }
    created = await client.post("/admin/tiers", json={"name": "trial", **limits}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "trial", "object": "tier", **limits}
    dup = await client.post("/admin/tiers", json={"name": "trial", **limits}, headers=headers)
    assert_error(dup, 409)
    bad_name = await client.post(
        "/admin/tiers", json={"name": "Bad Name", **limits}, headers=headers
    )
    assert_error(bad_name, 400, param="name")
    negative = await client.post(
        "/admin/tiers", json={**limits, "name": "neg", "tokens_per_minute": -1}, headers=headers
    )
    assert_error(negative, 400, param="tokens_per_minute")
    # Past a 32-bit column: a clear 400 on every database, never a 500 from PostgreSQL.
    for field in ("requests_per_minute", "max_concurrent_requests"):
        huge = await client.post(
            "/admin/tiers", json={**limits, "name": "huge", field: 2**31}, headers=headers
        )
        assert_error(huge, 400, param=field)
        too_big = await client.patch("/admin/tiers/free", json={field: 2**31}, headers=headers)
        assert_error(too_big, 400, param=field)
    patched = await client.patch(
        "/admin/tiers/trial", json={"requests_per_minute": 7}, headers=headers
    )
    assert patched.json()["requests_per_minute"] == 7
    assert_error(await client.patch("/admin/tiers/trial", json={}, headers=headers), 400)
    assert_error(
        await client.patch("/admin/tiers/ghost", json={"tokens_per_month": 1}, headers=headers), 404
    )
    assert await audit_actions(client, admin_key, "trial") == ["tier.update", "tier.create"]


async def test_stored_admin_keys_work_and_audit_names_them(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    services: Services = app.state.services
    async with transaction(services.sessions) as session:
        created = await create_admin_key(session, actor="cli", name="ops")
    listed = await client.get("/admin/tiers", headers=bearer(created.raw))
    assert listed.status_code == 200
    application = await apply(client)
    await client.post(f"/admin/waitlist/{application['id']}/reject", headers=bearer(created.raw))
    audit = await client.get(
        "/admin/audit", params={"action": "waitlist.reject"}, headers=bearer(created.raw)
    )
    assert audit.json()["data"][0]["actor"] == f"admin:{created.credential.id}"


async def test_every_admin_action_is_audited(client: httpx.AsyncClient, admin_key: str) -> None:
    developer = await onboard_developer(client, admin_key, tier="standard")
    headers = admin_headers(admin_key)
    await client.patch(
        f"/admin/accounts/{developer.account_id}", json={"status": "suspended"}, headers=headers
    )
    await client.delete(f"/admin/keys/{developer.key_id}", headers=headers)
    await client.patch("/admin/tiers/free", json={"tokens_per_month": 5}, headers=headers)
    audit = await client.get("/admin/audit", params={"actor": "admin:env"}, headers=headers)
    actions = [entry["action"] for entry in audit.json()["data"]]
    assert actions == ["tier.update", "key.revoke", "account.update", "waitlist.approve"]
