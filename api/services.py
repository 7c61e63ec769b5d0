"""Everything the app holds for its lifetime, built in the lifespan and injected via deps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.admission import LimiterAdmitter, WaitlistIpLimit, build_limiter
from api.generation.service import GenerationService, open_generation
from api.metering_setup import open_metering
from auth.authenticator import Authenticator, RedisVersion, key_cache_version_key
from auth.ratelimit import Limiter
from auth.tokens import hash_secret
from core.config import Settings
from core.db import create_engine, session_factory
from core.redis import redis_client

# At shutdown, how long requests still in flight (cancelled by the server) may take to settle.
SETTLE_TIMEOUT_S = 10.0

# Called with the client's IP before a waitlist application is accepted; raises RateLimited.
WaitlistGuard = Callable[[str], Awaitable[None]]


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    authenticator: Authenticator
    redis: Redis | None = None  # decode_responses=True; keys must start with settings.redis_prefix
    admin_key_hash: str | None = None  # SHA-256 of SLUICEGATE_ADMIN_KEY, if set
    # Slots filled by later parts of the gateway (limits, inference, billing):
    waitlist_guard: WaitlistGuard | None = None
    limiter: Limiter | None = None
    generation: GenerationService | None = None  # /v1/completions, /v1/chat/completions


async def build_services(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry | None = None
) -> Services:
    """Open the database engine and Redis; `stack` closes them when the app stops."""
    engine = create_engine(settings.database_url, pool=settings.database_pool)
    stack.push_async_callback(engine.dispose)
    sessions = session_factory(engine)
    redis: Redis | None = None
    if settings.redis_url:
        redis = redis_client(settings.redis_url, timeout_s=settings.redis_timeout_s)
        stack.push_async_callback(redis.aclose)
    version = RedisVersion(redis, key_cache_version_key(settings.redis_prefix)) if redis else None
    authenticator = Authenticator(
        sessions,
        ttl_s=settings.key_cache_ttl_s,
        poll_s=settings.key_version_poll_s,
        version=version,
    )
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    limiter = None
    if settings.limits_enabled:
        limiter = build_limiter(settings, sessions=sessions, registry=registry)
    if limiter is not None:
        stack.push_async_callback(limiter.aclose)
    per_ip = settings.waitlist_per_ip_per_minute
    generation = await open_generation(settings)
    stack.push_async_callback(generation.close)
    if limiter is not None:
        generation.admitter = LimiterAdmitter(limiter)
    meter = await open_metering(settings, sessions, stack)  # billing: ledger + sweeper
    if meter is not None:
        generation.meter = meter
    # Runs first at shutdown: requests cut by the drain deadline settle while the limiter
    # and the ledger writer still work.
    stack.push_async_callback(generation.wait_settled, SETTLE_TIMEOUT_S)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        authenticator=authenticator,
        redis=redis,
        admin_key_hash=hash_secret(admin_key) if admin_key else None,
        limiter=limiter,
        generation=generation,
        waitlist_guard=WaitlistIpLimit(limiter, per_ip) if limiter and per_ip else None,
    )
