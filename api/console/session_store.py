"""The console session's row: found for every page, started at sign-in, deleted at sign-out.

`load_session` runs before every console route (an app-level dependency) in a short
transaction of its own, committed before the page runs, so touching `last_seen_at` never
holds a write lock across a page (SQLite) or collides with a page's own transaction. A
session whose row is gone or expired is a visitor's: pages that need someone send the
browser to sign in. Whether the key behind a live row may still be used is `api.console.deps`'
per-page check.
"""

from __future__ import annotations

import datetime as dt

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.console.context import console_of
from api.deps import get_services
from auth import console_sessions
from auth.console_sessions import Holder
from core.db import transaction, utcnow

LIFETIME = dt.timedelta(hours=12)  # a session ends this long after sign-in, however active


async def load_session(request: Request) -> None:
    console = console_of(request)
    if not console.presented:
        return  # a new id has no row: no database work for a first visit
    services = await get_services(request)
    async with transaction(services.sessions) as db:
        holder = await console_sessions.find_session(
            db, session_id=console.session.sid, policy=console.kit.policy, now=utcnow()
        )
    if holder is not None:
        console.session = console.session.held_by(holder)


async def sign_in(request: Request, db: AsyncSession, *, holder: Holder) -> None:
    """Start a session for `holder` under a new id (ending this browser's previous one)."""
    console = console_of(request)
    await console_sessions.end_session(db, session_id=console.session.sid)
    sid = await console_sessions.start_session(
        db, holder=holder, policy=console.kit.policy, now=utcnow()
    )
    console.session = console.session.signed_in(sid, holder)


async def end_ended_session(request: Request) -> None:
    """The key behind this session can no longer be used: delete the row at once, in a
    transaction of its own (the page's is about to be rolled back by the sign-in redirect)."""
    console = console_of(request)
    services = await get_services(request)
    async with transaction(services.sessions) as db:
        await console_sessions.end_session(db, session_id=console.session.sid)
    console.session = console.session.signed_out()


async def sign_out(request: Request, db: AsyncSession) -> None:
    """Delete the session's row: this cookie, and every copy of it, is signed out."""
    console = console_of(request)
    await console_sessions.end_session(db, session_id=console.session.sid)
    console.session = console.session.signed_out()
