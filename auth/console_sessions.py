"""Web console sessions kept on the server: start one at sign-in, find it on each page, end it.

The browser holds a random session id (256 bits); the table holds only its SHA-256, so a
database dump does not hand out sessions. Ending a session deletes its row, which kills
every copy of the cookie at once. Whether a session is still valid is decided from the row
and the server's clock alone: it ends after `idle` without a page, and at `lifetime` after
sign-in however active. To keep page views cheap, `last_seen_at` is written at most once a
`TOUCH_EVERY`, so the idle timeout is exact to within that. Expired rows are deleted when
they are next presented, and all of them whenever someone signs in.

Whether the key behind a session may still be used (revoked, expired, suspended) is not
decided here: the console checks `credential_hash` against the keys on every page.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import ConsoleSessionRecord
from auth.tokens import hash_secret

Role = Literal["developer", "admin"]
SESSION_ID_BYTES = 32
# What `new_session_id` makes (URL-safe base64 of SESSION_ID_BYTES); anything else is refused
# before it reaches the database.
SESSION_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
TOUCH_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: dt.timedelta  # without a page for this long, the session ends
    lifetime: dt.timedelta  # after sign-in, the session ends at this age however active


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a session belongs to, as the console shows and re-checks it."""

    role: Role
    principal_id: str  # the developer's key id, the admin key's id or "env"
    credential_hash: str  # SHA-256 of the key signed in with
    label: str  # a key prefix or an admin key's name
    account_id: str | None = None


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_session_id(text: str) -> bool:
    return SESSION_ID_SHAPE.fullmatch(text) is not None


async def start_session(
    db: AsyncSession, *, holder: Holder, policy: SessionPolicy, now: dt.datetime
) -> str:
    """A new session for `holder`; returns its id (the only copy: the caller's cookie)."""
    await purge_expired(db, now=now)
    session_id = new_session_id()
    ends_at = now + policy.lifetime
    db.add(
        ConsoleSessionRecord(
            id_hash=hash_secret(session_id),
            role=holder.role,
            principal_id=holder.principal_id,
            account_id=holder.account_id,
            credential_hash=holder.credential_hash,
            label=holder.label,
            created_at=now,
            last_seen_at=now,
            ends_at=ends_at,
            expires_at=min(now + policy.idle, ends_at),
        )
    )
    await db.flush()
    return session_id


async def find_session(
    db: AsyncSession, *, session_id: str, policy: SessionPolicy, now: dt.datetime
) -> Holder | None:
    """The holder of a live session, touching it if it was last seen a while ago; None for an
    unknown, malformed or expired id (an expired row is deleted)."""
    if not is_session_id(session_id):
        return None
    record = await db.get(ConsoleSessionRecord, hash_secret(session_id))
    if record is None:
        return None
    if record.expires_at <= now:
        await db.delete(record)
        return None
    if now - record.last_seen_at >= TOUCH_EVERY:
        record.last_seen_at = now
        record.expires_at = min(now + policy.idle, record.ends_at)
    return Holder(
        role="admin" if record.role == "admin" else "developer",
        principal_id=record.principal_id,
        credential_hash=record.credential_hash,
        label=record.label,
        account_id=record.account_id,
    )


async def end_session(db: AsyncSession, *, session_id: str) -> bool:
    """Sign out: the row goes, so every copy of the cookie is dead. False if it was gone."""
    if not is_session_id(session_id):
        return False
    result = await db.execute(
        delete(ConsoleSessionRecord).where(ConsoleSessionRecord.id_hash == hash_secret(session_id))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def purge_expired(db: AsyncSession, *, now: dt.datetime) -> int:
    """Delete every session past its idle or absolute end (indexed on `expires_at`)."""
    result = await db.execute(
        delete(ConsoleSessionRecord).where(ConsoleSessionRecord.expires_at <= now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
