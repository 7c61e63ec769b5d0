"""Audit log: who did what to which object, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.models import AuditEntry
from core.inputs import check_fits

CLI_ACTOR = "cli"
PUBLIC_ACTOR = "public"  # someone without a key (a waitlist applicant)


def admin_actor(admin_id: str) -> str:
    return f"admin:{admin_id}"


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    # Every door (HTTP, CLI, console) writes here: a value its column cannot hold is the
    # caller's 400 on both databases, not PostgreSQL's 500 (SQLite ignores lengths).
    for param, value in (("actor", actor), ("action", action), ("target", target)):
        check_fits(value, getattr(AuditEntry, param), param=param)
    entry = AuditEntry(actor=actor, action=action, target=target, details=details or {})
    session.add(entry)
    await session.flush()
    return entry


async def list_entries(
    session: AsyncSession,
    *,
    limit: int,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntry]:
    """Newest first; `since` inclusive, `until` exclusive."""
    query = select(AuditEntry)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    if until is not None:
        query = query.where(AuditEntry.created_at < until)
    query = query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    return list((await session.scalars(query)).all())
