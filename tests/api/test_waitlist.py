"""Public waitlist: apply, status, claim, and every error path (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.access import USE_CASE, admin_headers

APPLICANT = {"email": "ada@example.com", "name": "Ada", "use_case": USE_CASE}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(
    response: httpx.Response, status: int, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return dict(error)


async def apply(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/waitlist", json={**APPLICANT, **overrides})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_apply_returns_pending_and_a_claim_token(client: httpx.AsyncClient) -> None:
    body = await apply(client, organization="Analytical Engines")
    assert body["status"] == "pending"
    assert body["id"].startswith("wl_")
    assert body["claim_token"].startswith("wlc-") and len(body["claim_token"]) > 40

    status = await client.get(f"/v1/waitlist/{body['id']}", headers=bearer(body["claim_token"]))
    assert status.status_code == 200
    assert status.json()["status"] == "pending"
    assert status.json()["claimed"] is False
    assert "claim_token" not in status.text


async def test_same_email_twice_is_409_case_insensitively(client: httpx.AsyncClient) -> None:
    await apply(client)
    again = await client.post("/v1/waitlist", json={**APPLICANT, "email": "ADA@Example.com"})
    error = assert_error(again, 409, param="email")
    assert "already exists" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**APPLICANT, "email": "not-an-email"}, "email"),
        ({"email": "a@example.com", "name": "A"}, "use_case"),
        ({**APPLICANT, "use_case": "short"}, "use_case"),
        ({**APPLICANT, "name": "x" * 201}, "name"),
        ({**APPLICANT, "name": "   "}, "name"),
        ({**APPLICANT, "organization": "o" * 201}, "organization"),
        ({**APPLICANT, "admin": True}, "admin"),
        ({**APPLICANT, "email": 42}, "email"),
    ],
)
async def test_bad_applications_are_400_with_param(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/waitlist", json=body)
    error = assert_error(response, 400, param=param)
    assert error["type"] == "invalid_request_error"


async def test_malformed_json_and_missing_body_are_400(client: httpx.AsyncClient) -> None:
    broken = await client.post(
        "/v1/waitlist", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_error(broken, 400, code="invalid_json")
    empty = await client.post("/v1/waitlist")
    assert_error(empty, 400, code="missing_required_parameter")


async def test_status_needs_the_right_claim_token(client: httpx.AsyncClient) -> None:
    body = await apply(client)
    missing = await client.get(f"/v1/waitlist/{body['id']}")
    assert_error(missing, 401, code="invalid_claim_token")
    wrong = await client.get(f"/v1/waitlist/{body['id']}", headers=bearer("wlc-wrong"))
    assert_error(wrong, 401, code="invalid_claim_token")
    # An unknown id is answered like a wrong token (no existence oracle).
    unknown = await client.get("/v1/waitlist/wl_nope", headers=bearer(body["claim_token"]))
    assert_error(unknown, 401, code="invalid_claim_token")


async def test_claim_before_approval_is_409_naming_the_status(client: httpx.AsyncClient) -> None:
    body = await apply(client)
    early = await client.post(
        f"/v1/waitlist/{body['id']}/claim", headers=bearer(body["claim_token"])
    )
    error = assert_error(early, 409, code="application_pending")
    assert "pending" in error["message"]


async def test_claim_after_rejection_is_409(client: httpx.AsyncClient, admin_key: str) -> None:
    body = await apply(client)
    rejected = await client.post(
        f"/admin/waitlist/{body['id']}/reject",
        json={"reason": "Not a fit for the beta."},
        headers=admin_headers(admin_key),
    )
    assert rejected.status_code == 200
    claim = await client.post(
        f"/v1/waitlist/{body['id']}/claim", headers=bearer(body["claim_token"])
    )
    assert "rejected" in assert_error(claim, 409)["message"]
    status = await client.get(f"/v1/waitlist/{body['id']}", headers=bearer(body["claim_token"]))
    assert status.json()["status"] == "rejected"
    assert status.json()["reason"] == "Not a fit for the beta."


async def test_claim_issues_the_key_exactly_once(client: httpx.AsyncClient, admin_key: str) -> None:
    body = await apply(client)
    await client.post(f"/admin/waitlist/{body['id']}/approve", headers=admin_headers(admin_key))
    wrong = await client.post(f"/v1/waitlist/{body['id']}/claim", headers=bearer("wlc-guess"))
    assert_error(wrong, 401)

    claim = await client.post(
        f"/v1/waitlist/{body['id']}/claim", headers=bearer(body["claim_token"])
    )
    assert claim.status_code == 201, claim.text
    key = claim.json()
    assert set(key) >= {"id", "key", "prefix", "created_at"}
    assert key["key"].startswith("sk-") and key["key"].startswith(key["prefix"])

    again = await client.post(
        f"/v1/waitlist/{body['id']}/claim", headers=bearer(body["claim_token"])
    )
    assert_error(again, 409, code="already_claimed")
    assert key["key"] not in again.text

    works = await client.get("/v1/keys", headers=bearer(key["key"]))
    assert works.status_code == 200
    status = await client.get(f"/v1/waitlist/{body['id']}", headers=bearer(body["claim_token"]))
    assert status.json()["claimed"] is True


async def test_concurrent_claims_issue_one_key(client: httpx.AsyncClient, admin_key: str) -> None:
    body = await apply(client)
    await client.post(f"/admin/waitlist/{body['id']}/approve", headers=admin_headers(admin_key))
    claims = [
        client.post(f"/v1/waitlist/{body['id']}/claim", headers=bearer(body["claim_token"]))
        for _ in range(4)
    ]
    statuses = sorted(r.status_code for r in await asyncio.gather(*claims))
    assert statuses == [201, 409, 409, 409]


async def test_concurrent_applications_with_one_email(client: httpx.AsyncClient) -> None:
    attempts = [client.post("/v1/waitlist", json=APPLICANT) for _ in range(3)]
    statuses = sorted(r.status_code for r in await asyncio.gather(*attempts))
    assert statuses == [201, 409, 409]
