"""Developer API keys: create, list, revoke, and resolve a key hash to a `Principal`."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import Account, ApiKey, Tier
from auth.tokens import display_prefix, hash_secret, new_api_key
from core.db import utcnow
from core.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from core.inputs import check_instant, check_text

MAX_ACTIVE_KEYS_PER_ACCOUNT = 100


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, with everything the hot path needs (so it can be cached)."""

    account_id: str
    key_id: str
    tier: str
    requests_per_minute: int
    tokens_per_minute: int
    max_concurrent_requests: int
    tokens_per_month: int
    allowed_models: frozenset[str] | None  # None: every model
    expires_at: datetime | None
    # The key's own caps inside the tier's limits (None: the tier decides).
    key_requests_per_minute: int | None = None
    key_tokens_per_minute: int | None = None
    key_max_concurrent_requests: int | None = None
    key_prefix: str = ""  # what lists show (`sk-AbCdEfGh`): safe to log

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def restrictions(self) -> list[str]:
        """What narrows this key below its account: model scope, expiry, operator caps."""
        found = []
        if self.allowed_models is not None:
            found.append("a model scope")
        if self.expires_at is not None:
            found.append("an expiry")
        caps = (
            self.key_requests_per_minute,
            self.key_tokens_per_minute,
            self.key_max_concurrent_requests,
        )
        if any(cap is not None for cap in caps):
            found.append("operator limits")
        return found


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key row joined with what decides whether it may authenticate right now."""

    principal: Principal
    revoked: bool
    account_status: str


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    raw: str  # shown once, in the creating response


def check_may_mint(creator: Principal) -> None:
    """Only an unrestricted key may create keys (README, "Manage keys").

    A restricted key that could mint would make a leak of it a leak of the whole account:
    a child that inherited its scope and expiry would still add its caps up (each child gets
    its own), and would outlive the revocation of its parent.
    """
    restrictions = creator.restrictions()
    if restrictions:
        raise PermissionDenied(
            f"This key is restricted ({', '.join(restrictions)}) and cannot create keys. "
            "Create keys with an unrestricted key of the account."
        )


async def create_key(
    session: AsyncSession,
    *,
    account_id: str,
    name: str | None = None,
    expires_at: datetime | None = None,
    allowed_models: Sequence[str] | None = None,
) -> CreatedKey:
    if expires_at is not None and check_instant(expires_at, param="expires_at") <= utcnow():
        raise InvalidRequest("expires_at must be in the future.", param="expires_at")
    check_text(name, param="name")
    check_text(allowed_models, param="allowed_models")
    if await count_active_keys(session, account_id=account_id) >= MAX_ACTIVE_KEYS_PER_ACCOUNT:
        raise Conflict(
            f"An account may hold at most {MAX_ACTIVE_KEYS_PER_ACCOUNT} active keys; "
            "revoke one first."
        )
    raw = new_api_key()
    key = ApiKey(
        account_id=account_id,
        name=name,
        key_hash=hash_secret(raw),
        prefix=display_prefix(raw),
        allowed_models=sorted(set(allowed_models)) if allowed_models is not None else None,
        expires_at=expires_at,
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    return CreatedKey(key=key, raw=raw)


async def count_active_keys(session: AsyncSession, *, account_id: str) -> int:
    query = select(func.count()).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
    return int(await session.scalar(query) or 0)


async def list_keys(session: AsyncSession, *, account_id: str) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    return list((await session.scalars(query)).all())


async def get_key(session: AsyncSession, *, key_id: str, account_id: str | None = None) -> ApiKey:
    """A key by id; with `account_id`, another account's key is reported as missing."""
    key = await session.get(ApiKey, key_id)
    if key is None or (account_id is not None and key.account_id != account_id):
        raise NotFound(f"No API key with id {key_id!r}.", param="key_id", code="key_not_found")
    return key


async def revoke_key(
    session: AsyncSession, *, key_id: str, account_id: str | None = None
) -> ApiKey:
    """Revoke (idempotent). The caller must also invalidate the authentication caches."""
    key = await get_key(session, key_id=key_id, account_id=account_id)
    if key.revoked_at is None:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await session.refresh(key)
    return key


async def find_key_record(session: AsyncSession, *, key_hash: str) -> KeyRecord | None:
    """One indexed query: key, its account and the account's tier."""
    query = (
        select(ApiKey, Account.status, Tier)
        .join(Account, Account.id == ApiKey.account_id)
        .join(Tier, Tier.name == Account.tier)
        .where(ApiKey.key_hash == key_hash)
    )
    row = (await session.execute(query)).one_or_none()
    if row is None:
        return None
    key, account_status, tier = row
    if not hmac.compare_digest(key.key_hash, key_hash):  # belt and braces over the SQL '='
        return None
    principal = Principal(
        account_id=key.account_id,
        key_id=key.id,
        tier=tier.name,
        requests_per_minute=tier.requests_per_minute,
        tokens_per_minute=tier.tokens_per_minute,
        max_concurrent_requests=tier.max_concurrent_requests,
        tokens_per_month=tier.tokens_per_month,
        allowed_models=frozenset(key.allowed_models) if key.allowed_models is not None else None,
        expires_at=key.expires_at,
        key_requests_per_minute=key.requests_per_minute,
        key_tokens_per_minute=key.tokens_per_minute,
        key_max_concurrent_requests=key.max_concurrent_requests,
        key_prefix=key.prefix,
    )
    return KeyRecord(
        principal=principal, revoked=key.revoked_at is not None, account_status=account_status
    )
