"""Authenticating developer keys without a database query on the hot path.

Each process keeps a short cache from key hash to what the database said. Two things bound
how long a revoked key or a suspended account can still get in:

- every entry expires after `ttl_s` (at most 5 s), which alone bounds staleness on every
  process, Redis or not;
- with Redis, a shared version counter is bumped (INCR) on every revocation, suspension or
  tier change, and each process reads it at most once per `poll_s`, dropping its whole cache
  when it moved. So with Redis a revocation lands everywhere within about `poll_s`.

The process that made the change drops its own cache at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.keys import KeyRecord, Principal, find_key_record
from auth.tokens import API_KEY_MARKER, hash_secret, is_admin_key
from core.db import utcnow
from core.errors import AuthenticationFailed, PermissionDenied

log = logging.getLogger(__name__)

MAX_PRESENTED_KEY_CHARS = 200  # longer is never one of ours; don't spend a hash on it
INVALID_KEY_MESSAGE = (
    "Incorrect API key provided. You can find your API keys with GET /v1/keys or ask an operator."
)


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord | None  # None: no such key (cached too, so guessing costs no query)
    loaded_at: float


def key_cache_version_key(redis_prefix: str) -> str:
    """Where the cluster-wide key-cache version lives (every process and the CLI agree)."""
    return f"{redis_prefix}auth:key-cache-version"


class RedisVersion:
    """The cluster-wide cache version: one Redis integer."""

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self._key = key

    async def read(self) -> int:
        value = await self._redis.get(self._key)
        return int(value or 0)

    async def bump(self) -> None:
        await self._redis.incr(self._key)


class Authenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float,
        poll_s: float = 1.0,
        version: RedisVersion | None = None,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._poll_s = poll_s
        self._version = version
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._seen_version: int | None = None
        self._next_poll = 0.0

    async def authenticate(self, raw_key: str) -> Principal:
        """The principal for a presented developer key, or a typed 401/403 error."""
        if (
            not raw_key.startswith(API_KEY_MARKER)
            or is_admin_key(raw_key)
            or len(raw_key) > MAX_PRESENTED_KEY_CHARS
        ):
            raise AuthenticationFailed(INVALID_KEY_MESSAGE)
        await self._follow_shared_version()
        key_hash = hash_secret(raw_key)
        now = self._clock()
        entry = self._entries.get(key_hash)
        if entry is None or now - entry.loaded_at >= self._ttl_s:
            entry = _Entry(await self._load_once(key_hash), now)
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # crude but bounded; a refill costs one query per key
            self._entries[key_hash] = entry
        return admit(entry.record)

    async def invalidate(self) -> None:
        """Call after committing a revocation, suspension or tier change."""
        self._entries.clear()
        if self._version is None:
            return
        try:
            await self._version.bump()
        except RedisError:
            # Other processes still drop the entry within ttl_s; say so loudly.
            log.warning("could not publish a key-cache invalidation; relying on the TTL")

    async def _load_once(self, key_hash: str) -> KeyRecord | None:
        """Concurrent misses for one key share one query: a burst must not exhaust the pool."""
        loading = self._loading.get(key_hash)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key_hash))
            self._loading[key_hash] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key_hash, None))
        return await asyncio.shield(loading)  # one caller giving up must not cancel the rest

    async def _load(self, key_hash: str) -> KeyRecord | None:
        async with self._sessions() as session:
            return await find_key_record(session, key_hash=key_hash)

    async def _follow_shared_version(self) -> None:
        if self._version is None:
            return
        now = self._clock()
        if now < self._next_poll:
            return
        self._next_poll = now + self._poll_s
        try:
            version = await self._version.read()
        except RedisError:
            log.warning("could not read the key-cache version; dropping the cache")
            self._entries.clear()
            return
        if version != self._seen_version:
            self._entries.clear()
            self._seen_version = version


def admit(record: KeyRecord | None) -> Principal:
    """The principal of a looked-up key, or the 401/403 it gets (revoked, expired, suspended)."""
    if record is None:
        raise AuthenticationFailed(INVALID_KEY_MESSAGE)
    if record.revoked:
        raise AuthenticationFailed("This API key has been revoked.")
    expires_at = record.principal.expires_at
    if expires_at is not None and expires_at <= utcnow():
        raise AuthenticationFailed("This API key has expired.")
    if record.account_status != "active":
        raise PermissionDenied(
            "This account is suspended; contact the operator.", code="account_suspended"
        )
    return record.principal
