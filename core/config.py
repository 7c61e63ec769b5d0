"""Typed settings read from the environment (prefix `SLUICEGATE_`, plus DATABASE_URL/REDIS_URL)."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.db import PoolLimits, async_url

# Secrets people paste from examples; refused outright outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "admin", "password", "secret", "sk-admin", "test"}
)
MIN_ADMIN_KEY_LENGTH = 32
MIN_ADMIN_KEY_ENTROPY_BITS = 128.0


def estimated_entropy_bits(secret: str) -> float:
    """Shannon entropy of the character distribution times length: a cheap weak-key screen."""
    if not secret:
        return 0.0
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    return per_char * len(secret)


def weak_secret_reason(secret: str) -> str | None:
    """Why `secret` is too weak to guard the admin API, or None when it is acceptable."""
    lowered = secret.strip().lower()
    if lowered in PLACEHOLDER_SECRETS or any(p in lowered for p in ("changeme", "change-me")):
        return "it is a placeholder"
    if len(secret) < MIN_ADMIN_KEY_LENGTH:
        return f"it is shorter than {MIN_ADMIN_KEY_LENGTH} characters"
    if estimated_entropy_bits(secret) < MIN_ADMIN_KEY_ENTROPY_BITS:
        return "it has too little entropy (use `sluicegate admin create-key`)"
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICEGATE_",
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # never echo a refused secret back
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = Field(
        default="sqlite:///./var/sluicegate.db",
        validation_alias=AliasChoices("DATABASE_URL", "SLUICEGATE_DATABASE_URL"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SLUICEGATE_REDIS_URL")
    )
    # Every Redis key we write starts with this, so deployments (and tests) can share a Redis.
    redis_prefix: str = "sluicegate:"
    # The longest any Redis call on the request path waits (connecting, or for a reply): a
    # Redis that hangs then costs a request at most this and degrades like one that is down.
    redis_timeout_s: float = Field(default=0.5, gt=0, le=5.0)
    admin_key: SecretStr | None = None
    default_tier: str = "free"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Upper bound on how long a revoked key or suspended account may still authenticate.
    key_cache_ttl_s: float = Field(default=5.0, gt=0, le=5.0)
    # With Redis, how often each process polls the shared revocation counter.
    key_version_poll_s: float = Field(default=1.0, gt=0, le=5.0)
    # PostgreSQL connections of one gateway process (a uvicorn worker): its SQLAlchemy pool
    # (`database_pool_size` kept open, `database_max_overflow` more under load) and the
    # ledger writer's asyncpg pool. Keep, over every replica and worker,
    #   replicas x workers x connections_per_process <= max_connections
    #     - superuser_reserved_connections - headroom (CLI, migrations, psql, monitoring);
    # a request that finds the pool busy waits `database_pool_timeout_s`, then gets a 503
    # with Retry-After (as it does when PostgreSQL refuses the connection).
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=5, ge=0)
    database_pool_timeout_s: float = Field(default=5.0, gt=0)
    database_connect_timeout_s: float = Field(default=5.0, gt=0)
    ledger_pool_size: int = Field(default=4, ge=1)
    # HTTP connections of `sluicegate serve` (api/http_server.py). A client has
    # `http_header_timeout_s` from its first byte (or from connecting) to send a whole request
    # head, and may pause at most `http_body_timeout_s` inside a body: then it gets a 408 and
    # is closed. An idle keep-alive connection is closed after `http_keep_alive_s`. Past
    # `http_max_connections` open connections (per process) a new one gets a 503.
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_keep_alive_s: int = Field(default=5, ge=1)
    http_max_connections: int = Field(default=1000, ge=1)
    # On SIGTERM the server stops accepting, lets requests in flight (streams) finish for up
    # to this long, then cancels the rest (settled and billed as aborted), flushes the
    # ledger and stops.
    drain_timeout_s: int = Field(default=30, ge=0)
    # Usage metering (billing/): off only to measure its cost. Batching shares one ledger
    # transaction between concurrent requests; heartbeat/stale/sweep drive the sweeper that
    # settles rows of dead gateway processes (billing/sweeper.py).
    metering_enabled: bool = True
    ledger_batching: bool = True
    # Under load a ledger batch waits this long for more writes (billing/writer.py): a
    # quarter fewer transactions and 8% more requests/s in bench/gateway.py's full stack
    # with 2 workers; a request alone never waits.
    ledger_linger_ms: float = Field(default=1.0, ge=0, le=50)
    ledger_heartbeat_s: float = Field(default=5.0, gt=0)
    ledger_stale_after_s: float = Field(default=30.0, gt=0)
    ledger_sweep_interval_s: float = Field(default=30.0, gt=0)
    # A stream's delivered tokens are checkpointed on its ledger row this often: what is
    # billed if its gateway dies (a stream cut before its first checkpoint is not billed).
    ledger_checkpoint_s: float = Field(default=1.0, gt=0)
    var_dir: Path = Path("./var")
    config_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("SLUICEGATE_CONFIG", "config_path")
    )
    # Off: no rate limits, quotas or x-ratelimit headers at all (benchmarks, trusted setups).
    limits_enabled: bool = True
    limiter_failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"
    # How soon the slots and reserved tokens of a gateway process that died are released:
    # live requests renew their lease every third of this (auth/ratelimit/leases.py).
    limiter_slot_lease_s: float = Field(default=15.0, ge=0.5, le=600.0)
    # Under load a Redis round trip waits this long for more admissions and settlements to
    # share it (auth/ratelimit/batching.py): 40% fewer script calls and 7% more requests/s in
    # bench/gateway.py's full stack with 2 workers; a request alone never waits.
    limiter_linger_ms: float = Field(default=1.0, ge=0, le=50)
    # Waitlist applications per client IP in any rolling minute (0: unlimited).
    waitlist_per_ip_per_minute: int = Field(default=10, ge=0)
    log_level: str = "info"
    # `json`: one JSON object a log line, and one line per request with its account, key
    # prefix, model, status, tokens and latency (api/request_log.py). `text`: uvicorn's.
    log_format: Literal["text", "json"] = "text"
    # Load and warm every model as the app starts, in the background (/readyz is 503 until
    # they are ready) instead of on the first request; `sluicegate serve` turns it on.
    # Production always loads them before serving.
    preload_models: bool = False
    # The web console (api/console): the secret its session cookies are signed with (every
    # gateway process must share it; unset: a random one per process, so sessions end when
    # the process restarts), and how long an idle session lasts.
    console_secret: SecretStr | None = None
    console_idle_timeout_s: int = Field(default=1800, ge=60, le=7 * 24 * 3600)
    # FastAPI's built-in OpenTelemetry (traces, metrics, logs through the global providers).
    # Off by default: the gateway has its own Prometheus metrics, and even unconfigured,
    # FastAPI looks the providers up on every request.
    opentelemetry: bool = False
    # The cyclic garbage collector runs its youngest generation after this many net
    # allocations (Python's default: 700). A request allocates hundreds of objects, so at
    # the default the gateway spent about 9% of its CPU collecting under load; at 10,000 to
    # 50,000, 2 to 3%. Reference cycles still get collected, just in larger batches.
    gc_threshold: int = Field(default=50_000, ge=700)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        async_url(value)  # raises ValueError for schemes we cannot drive
        return value

    @field_validator("redis_url")
    @classmethod
    def _blank_redis_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("admin_key", "console_secret", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, value: object) -> object:
        blank = value is None or (isinstance(value, str) and not value.strip())
        return None if blank else value

    @model_validator(mode="after")
    def _refuse_weak_admin_key(self) -> Settings:
        if self.environment == "production" and self.admin_key is not None:
            reason = weak_secret_reason(self.admin_key.get_secret_value())
            if reason:
                raise ValueError(f"SLUICEGATE_ADMIN_KEY is refused in production: {reason}")
        if self.environment == "production" and self.console_secret is not None:
            reason = weak_secret_reason(self.console_secret.get_secret_value())
            if reason:
                raise ValueError(f"SLUICEGATE_CONSOLE_SECRET is refused in production: {reason}")
        return self

    @property
    def database_pool(self) -> PoolLimits:
        return PoolLimits(
            size=self.database_pool_size,
            max_overflow=self.database_max_overflow,
            timeout_s=self.database_pool_timeout_s,
            connect_timeout_s=self.database_connect_timeout_s,
        )

    @property
    def connections_per_process(self) -> int:
        """The most PostgreSQL connections one gateway process opens (see the rule above)."""
        ledger = self.ledger_pool_size if self.metering_enabled else 0
        return self.database_pool.most + ledger

    @property
    def admin_key_file(self) -> Path:
        return self.var_dir / "admin-key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests build `Settings(...)` explicitly instead."""
    return Settings()
