"""Operator (admin) credentials: hashed admin keys in the database, plus an optional
bootstrap key from the environment (SLUICEGATE_ADMIN_KEY)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import AdminCredential
from auth.tokens import display_prefix, hash_secret, new_admin_key
from core.db import utcnow
from core.errors import NotFound

ENV_ADMIN_ID = "env"  # the id audit rows carry for the environment's admin key


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    admin_id: str
    name: str

    @property
    def actor(self) -> str:
        return f"admin:{self.admin_id}"


@dataclass(frozen=True, slots=True)
class CreatedAdminKey:
    credential: AdminCredential
    raw: str


async def create_admin_key(session: AsyncSession, *, name: str) -> CreatedAdminKey:
    raw = new_admin_key()
    credential = AdminCredential(
        name=name, key_hash=hash_secret(raw), prefix=display_prefix(raw), created_at=utcnow()
    )
    session.add(credential)
    await session.flush()
    return CreatedAdminKey(credential=credential, raw=raw)


def match_env_admin(raw_key: str, *, env_key_hash: str | None) -> AdminPrincipal | None:
    """The environment's admin key (SLUICEGATE_ADMIN_KEY) is checked in memory."""
    return match_env_admin_hash(hash_secret(raw_key), env_key_hash=env_key_hash)


def match_env_admin_hash(key_hash: str, *, env_key_hash: str | None) -> AdminPrincipal | None:
    if env_key_hash is None or not hmac.compare_digest(key_hash, env_key_hash):
        return None
    return AdminPrincipal(admin_id=ENV_ADMIN_ID, name="SLUICEGATE_ADMIN_KEY")


async def find_admin(session: AsyncSession, *, raw_key: str) -> AdminPrincipal | None:
    """The stored admin a presented key belongs to, or None. Admin calls are rare: no cache."""
    return await find_admin_by_hash(session, key_hash=hash_secret(raw_key))


async def find_admin_by_hash(session: AsyncSession, *, key_hash: str) -> AdminPrincipal | None:
    """The active stored admin whose key hashes to `key_hash` (a console session keeps the
    hash, never the key, and checks it again on every page)."""
    presented = key_hash
    credential = await session.scalar(
        select(AdminCredential).where(
            AdminCredential.key_hash == presented, AdminCredential.revoked_at.is_(None)
        )
    )
    if credential is None or not hmac.compare_digest(credential.key_hash, presented):
        return None
    return AdminPrincipal(admin_id=credential.id, name=credential.name)


async def admin_key_is_active(session: AsyncSession, *, raw_key: str) -> bool:
    return await find_admin(session, raw_key=raw_key) is not None


async def list_admin_keys(session: AsyncSession) -> list[AdminCredential]:
    query = select(AdminCredential).order_by(AdminCredential.created_at)
    return list((await session.scalars(query)).all())


async def revoke_admin_key(session: AsyncSession, *, admin_id: str) -> None:
    result = await session.execute(
        update(AdminCredential)
        .where(AdminCredential.id == admin_id, AdminCredential.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"No active admin key with id {admin_id!r}.", param="admin_id")
