"""A key can never grant more than it has (issue #11, item 3).

The rule (README, "Manage keys"): only an unrestricted key (every model, no expiry, no
operator caps) may create keys. A restricted key that could mint would turn a leak of it
into a leak of everything: its child would not carry the scope, the caps would add up over
as many children as the account may hold, and a child outlives the revocation of its parent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from auth import operations
from auth.keys import Principal
from core.db import create_engine, session_factory, transaction
from core.errors import PermissionDenied
from tests.access import Developer, admin_headers
from tests.api.test_waitlist import assert_error, bearer


def in_a_week() -> str:
    return (datetime.now(UTC) + timedelta(days=7)).isoformat()


async def mint(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/keys", json=body, headers=bearer(key))


async def key_count(client: httpx.AsyncClient, developer: Developer) -> int:
    listed = await client.get("/v1/keys", headers=developer.headers)
    return len(listed.json()["data"])


@pytest.mark.parametrize(
    "restriction",
    [{"allowed_models": ["tiny"]}, {"expires_at": "week"}],
    ids=["model-scope", "expiry"],
)
async def test_a_scoped_or_expiring_key_cannot_mint(
    client: httpx.AsyncClient, developer: Developer, restriction: dict[str, Any]
) -> None:
    if "expires_at" in restriction:
        restriction = {"expires_at": in_a_week()}
    child = await mint(client, developer.key, name="restricted", **restriction)
    assert child.status_code == 201, child.text
    restricted = child.json()["key"]
    before = await key_count(client, developer)
    for body in ({}, {"name": "wider"}, restriction):  # wider, and even exactly as narrow
        assert_error(await mint(client, restricted, **body), 403, code="permission_denied")
    assert await key_count(client, developer) == before


async def test_a_key_the_operator_capped_cannot_mint_until_the_cap_is_lifted(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    path = f"/admin/keys/{developer.key_id}/limits"
    capped = await client.patch(
        path, json={"tokens_per_minute": 100}, headers=admin_headers(admin_key)
    )
    assert capped.status_code == 200, capped.text
    refused = await mint(client, developer.key, name="uncapped")
    error = assert_error(refused, 403, code="permission_denied")
    assert "restricted" in error["message"]
    lifted = await client.patch(
        path, json={"tokens_per_minute": None}, headers=admin_headers(admin_key)
    )
    assert lifted.status_code == 200, lifted.text
    assert (await mint(client, developer.key, name="now fine")).status_code == 201


async def test_an_unrestricted_key_mints_any_narrower_key(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    created = await mint(
        client, developer.key, name="ci", allowed_models=["tiny"], expires_at=in_a_week()
    )
    assert created.status_code == 201, created.text
    assert created.json()["allowed_models"] == ["tiny"]


def principal(**restrictions: Any) -> Principal:
    return Principal(
        account_id="acct_x",
        key_id="key_x",
        tier="free",
        requests_per_minute=1,
        tokens_per_minute=1,
        max_concurrent_requests=1,
        tokens_per_month=1,
        allowed_models=restrictions.get("allowed_models"),
        expires_at=restrictions.get("expires_at"),
        key_requests_per_minute=restrictions.get("key_requests_per_minute"),
        key_tokens_per_minute=restrictions.get("key_tokens_per_minute"),
        key_max_concurrent_requests=restrictions.get("key_max_concurrent_requests"),
    )


@pytest.mark.parametrize(
    "restriction",
    [
        {"allowed_models": frozenset({"tiny"})},
        {"expires_at": datetime(2999, 1, 1, tzinfo=UTC)},
        {"key_requests_per_minute": 5},
        {"key_tokens_per_minute": 5},
        {"key_max_concurrent_requests": 0},
    ],
)
async def test_the_rule_lives_in_the_domain_function(
    migrated_db_url: str, restriction: dict[str, Any]
) -> None:
    """The web console calls `operations.create_key` too: the rule holds whoever calls it."""
    engine = create_engine(migrated_db_url)
    try:
        async with transaction(session_factory(engine)) as session:
            await _refused(session, principal(**restriction))
    finally:
        await engine.dispose()


async def _refused(session: AsyncSession, creator: Principal) -> None:
    with pytest.raises(PermissionDenied, match="restricted"):
        await operations.create_key(
            session, actor=creator.account_id, account_id=creator.account_id, name="x",
            minted_by=creator,
        )  # fmt: skip
