"""auth.console_sessions on SQLite and PostgreSQL, with the server's clock handed in (`now=`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.console_sessions import (
    TOUCH_EVERY,
    Holder,
    SessionPolicy,
    end_session,
    find_session,
    new_session_id,
    start_session,
)
from auth.models import ConsoleSessionRecord
from auth.tokens import hash_secret
from core.db import create_engine, session_factory, transaction

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
POLICY = SessionPolicy(idle=dt.timedelta(minutes=30), lifetime=dt.timedelta(hours=12))
HOLDER = Holder(
    role="developer",
    principal_id="key_1",
    credential_hash="c" * 64,
    label="sk-AbCdEfGh",
    account_id="acct_1",
)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(migrated_db_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(migrated_db_url)
    yield session_factory(engine)
    await engine.dispose()


async def start(sessions: Sessions, now: dt.datetime = T0) -> str:
    async with transaction(sessions) as db:
        return await start_session(db, holder=HOLDER, policy=POLICY, now=now)


async def find(sessions: Sessions, session_id: str, now: dt.datetime) -> Holder | None:
    async with transaction(sessions) as db:
        return await find_session(db, session_id=session_id, policy=POLICY, now=now)


async def stored(sessions: Sessions) -> list[ConsoleSessionRecord]:
    async with transaction(sessions) as db:
        return list((await db.scalars(select(ConsoleSessionRecord))).all())


async def test_only_the_ids_hash_is_stored(sessions: Sessions) -> None:
    session_id = await start(sessions)
    [row] = await stored(sessions)
    assert row.id_hash == hash_secret(session_id) and session_id not in row.id_hash
    assert await find(sessions, session_id, T0) == HOLDER
    assert await find(sessions, new_session_id(), T0) is None


async def test_idle_timeout_counts_from_the_last_page_by_the_servers_clock(
    sessions: Sessions,
) -> None:
    session_id = await start(sessions)
    # Seen 25 minutes in: still alive, and touched, so 25 more minutes of idling are fine.
    assert await find(sessions, session_id, T0 + dt.timedelta(minutes=25)) == HOLDER
    assert await find(sessions, session_id, T0 + dt.timedelta(minutes=50)) == HOLDER
    # 30 minutes without a page: over, and the row is deleted.
    assert await find(sessions, session_id, T0 + dt.timedelta(minutes=80, seconds=1)) is None
    assert await stored(sessions) == []


async def test_last_seen_is_written_at_most_once_a_minute(sessions: Sessions) -> None:
    session_id = await start(sessions)
    await find(sessions, session_id, T0 + TOUCH_EVERY - dt.timedelta(seconds=1))
    [row] = await stored(sessions)
    assert row.last_seen_at == T0 and row.expires_at == T0 + POLICY.idle
    later = T0 + TOUCH_EVERY
    await find(sessions, session_id, later)
    [row] = await stored(sessions)
    assert row.last_seen_at == later and row.expires_at == later + POLICY.idle


async def test_a_busy_session_still_ends_at_its_lifetime(sessions: Sessions) -> None:
    session_id = await start(sessions)
    now = T0
    while now < T0 + POLICY.lifetime - dt.timedelta(minutes=20):
        now += dt.timedelta(minutes=20)
        assert await find(sessions, session_id, now) == HOLDER
    [row] = await stored(sessions)
    assert row.expires_at == T0 + POLICY.lifetime  # capped, however recent the last page
    assert await find(sessions, session_id, T0 + POLICY.lifetime) is None


async def test_ending_one_session_leaves_the_other_and_sign_in_purges_expired_ones(
    sessions: Sessions,
) -> None:
    first, second = await start(sessions), await start(sessions)
    async with transaction(sessions) as db:
        assert await end_session(db, session_id=first)
        assert not await end_session(db, session_id=first)  # already gone
    assert await find(sessions, first, T0) is None
    assert await find(sessions, second, T0) == HOLDER
    # Long after `second` idled out, someone signs in: the dead row goes.
    await start(sessions, now=T0 + dt.timedelta(days=1))
    async with transaction(sessions) as db:
        assert await db.scalar(select(func.count()).select_from(ConsoleSessionRecord)) == 1


@pytest.mark.parametrize(
    "presented", ["", "short", "x" * 43 + "\x00", "\x00" * 43, "é" * 43, "a" * 10_000]
)
async def test_malformed_ids_never_reach_the_database(sessions: Sessions, presented: str) -> None:
    await start(sessions)
    assert await find(sessions, presented, T0) is None
    async with transaction(sessions) as db:
        assert not await end_session(db, session_id=presented)
    assert len(await stored(sessions)) == 1
