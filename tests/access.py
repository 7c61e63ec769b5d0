"""Getting a working developer key through the real HTTP flow: waitlist -> approve -> claim."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

USE_CASE = "Testing the gateway end to end."


@dataclass(frozen=True)
class Developer:
    key: str  # the raw `sk-…` key
    key_id: str
    account_id: str
    application_id: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def admin_headers(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


async def onboard_developer(
    client: httpx.AsyncClient, admin_key: str, *, tier: str | None = None, email: str | None = None
) -> Developer:
    """Apply to the waitlist, approve as admin (optionally on `tier`), claim the first key.

    Works with any httpx.AsyncClient pointed at the app (ASGI transport or a live server).
    """
    email = email or f"dev-{uuid.uuid4().hex[:10]}@example.com"
    applied = await client.post(
        "/v1/waitlist",
        json={
            "email": email,
            "name": "Test Developer",
            "use_case": "Testing the gateway end to end.",
        },
    )
    assert applied.status_code == 201, applied.text
    application = applied.json()
    body = {"tier": tier} if tier else None
    approved = await client.post(
        f"/admin/waitlist/{application['id']}/approve", json=body, headers=admin_headers(admin_key)
    )
    assert approved.status_code == 200, approved.text
    claimed = await client.post(
        f"/v1/waitlist/{application['id']}/claim",
        headers={"Authorization": f"Bearer {application['claim_token']}"},
    )
    assert claimed.status_code == 201, claimed.text
    key = claimed.json()
    return Developer(
        key=key["key"],
        key_id=key["id"],
        account_id=key["account_id"],
        application_id=application["id"],
        email=email,
    )
