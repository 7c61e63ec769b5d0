"""The whole access lifecycle over a real uvicorn socket, with every log line captured.

waitlist -> admin approve -> claim -> list keys -> create a key with expiry and model scope
-> revoke -> 401. Also: raw keys and claim tokens never reach a log, appear in no response
but the one that created them, and the database holds only their hashes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Connection, text

from auth.tokens import hash_secret
from migrations.tables import load_metadata
from tests.access import USE_CASE, admin_headers
from tests.api.test_migrations import run_sync


class Recorder:
    """Every response of the flow, so we can check where secrets appeared."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)

    def containing(self, secret: str) -> list[str]:
        found = []
        for response in self.responses:
            where = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
            if secret in where:
                found.append(f"{response.request.method} {response.request.url.path}")
        return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def run_flow(http: httpx.AsyncClient, admin_key: str) -> dict[str, str]:
    applied = await http.post(
        "/v1/waitlist",
        json={"email": "grace@example.com", "name": "Grace", "use_case": USE_CASE},
    )
    assert applied.status_code == 201
    app_id, claim = applied.json()["id"], applied.json()["claim_token"]
    pending = await http.get("/admin/waitlist?status=pending", headers=admin_headers(admin_key))
    assert [a["id"] for a in pending.json()["data"]] == [app_id]
    approved = await http.post(
        f"/admin/waitlist/{app_id}/approve",
        json={"tier": "standard"},
        headers=admin_headers(admin_key),
    )
    assert approved.json()["status"] == "approved"
    assert (await http.get(f"/v1/waitlist/{app_id}", headers=bearer(claim))).json()[
        "status"
    ] == "approved"
    claimed = await http.post(f"/v1/waitlist/{app_id}/claim", headers=bearer(claim))
    assert claimed.status_code == 201
    first = claimed.json()["key"]

    listed = await http.get("/v1/keys", headers=bearer(first))
    assert [k["id"] for k in listed.json()["data"]] == [claimed.json()["id"]]
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    created = await http.post(
        "/v1/keys",
        json={"name": "scoped", "expires_at": expires, "allowed_models": ["tiny"]},
        headers=bearer(first),
    )
    assert created.status_code == 201
    scoped = created.json()
    assert scoped["allowed_models"] == ["tiny"] and scoped["expires_at"] is not None
    assert (await http.get("/v1/keys", headers=bearer(scoped["key"]))).status_code == 200

    revoked = await http.delete(f"/v1/keys/{scoped['id']}", headers=bearer(first))
    assert revoked.json()["deleted"] is True
    refused = await http.get("/v1/keys", headers=bearer(scoped["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert (await http.get("/admin/audit", headers=bearer(first))).status_code == 403
    return {
        "application_id": app_id,
        "claim_token": claim,
        "first_key": first,
        "scoped_key": scoped["key"],
    }


async def all_stored_values(url: str) -> str:
    def dump(connection: Connection) -> str:
        cells: list[str] = []
        for table in load_metadata().sorted_tables:
            for row in connection.execute(text(f"SELECT * FROM {table.name}")):
                cells.extend(str(value) for value in row)
        return "\n".join(cells)

    return str(await run_sync(url, dump))


async def test_lifecycle_over_a_real_socket(
    live_server: str, admin_key: str, migrated_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    async with httpx.AsyncClient(
        base_url=live_server, event_hooks={"response": [recorder]}
    ) as http:
        secrets = await run_flow(http, admin_key)

    app_id = secrets.pop("application_id")
    assert recorder.containing(secrets["claim_token"]) == ["POST /v1/waitlist"]
    assert recorder.containing(secrets["first_key"]) == [f"POST /v1/waitlist/{app_id}/claim"]
    assert recorder.containing(secrets["scoped_key"]) == ["POST /v1/keys"]

    # The logs were really captured (access log included), and hold no secret.
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) >= len(recorder.responses)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/waitlist" in logged
    for name, secret in secrets.items():
        assert secret not in logged, f"{name} leaked into the logs"
        assert secret[-20:] not in logged

    stored = await all_stored_values(migrated_db_url)
    for name, secret in secrets.items():
        assert secret not in stored, f"raw {name} stored"
        assert secret[-20:] not in stored
        assert hash_secret(secret) in stored, f"hash of {name} not stored"
