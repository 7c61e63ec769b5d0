"""Settings from the environment: database URLs, Redis, and refusing weak admin keys."""

from __future__ import annotations

import secrets

import pytest
from pydantic import SecretStr, ValidationError

from auth.tokens import new_admin_key
from core.config import Settings, get_settings
from core.db import async_url


@pytest.mark.parametrize(
    ("given", "driver_url"),
    [
        ("sqlite:///./var/x.db", "sqlite+aiosqlite:///./var/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+asyncpg://u@h/d"),
    ],
)
def test_database_urls_plain_or_async(
    monkeypatch: pytest.MonkeyPatch, given: str, driver_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    settings = Settings()
    assert settings.database_url == given
    assert async_url(settings.database_url) == driver_url


def test_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported database URL"):
        Settings(database_url="mysql://u@h/d")


def test_environment_prefix_and_plain_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("SLUICEGATE_DEFAULT_TIER", "standard")
    monkeypatch.setenv("SLUICEGATE_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("SLUICEGATE_CONFIG", "/etc/sluicegate/models.yaml")
    settings = Settings()
    assert settings.redis_url == "redis://r:6379/1"
    assert settings.default_tier == "standard" and settings.max_body_bytes == 2048
    assert str(settings.config_path) == "/etc/sluicegate/models.yaml"
    monkeypatch.setenv("REDIS_URL", "")
    assert Settings().redis_url is None


def test_key_cache_ttl_cannot_exceed_the_revocation_bound() -> None:
    with pytest.raises(ValidationError):
        Settings(key_cache_ttl_s=30)


@pytest.mark.parametrize(
    "weak",
    [
        "changeme",
        "CHANGEME-please-change-me-now-1234567890",
        "short-but-random-9f",
        "a" * 64,
        "abababababababababababababababababababab",
    ],
)
def test_weak_admin_keys_refused_in_production(weak: str) -> None:
    with pytest.raises(ValidationError, match="refused in production") as raised:
        Settings(environment="production", admin_key=SecretStr(weak))
    assert weak not in str(raised.value)  # the refusal never echoes the secret
    assert Settings(environment="development", admin_key=SecretStr(weak)).admin_key is not None


@pytest.mark.parametrize(
    "strong", [new_admin_key(), secrets.token_urlsafe(32), secrets.token_hex(32)]
)
def test_strong_admin_keys_accepted_in_production(strong: str) -> None:
    settings = Settings(environment="production", admin_key=SecretStr(strong))
    assert settings.admin_key is not None and settings.admin_key.get_secret_value() == strong
    assert strong not in repr(settings)


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("name", ["ledger_linger_ms", "limiter_linger_ms"])
@pytest.mark.parametrize("hostile", ["abc", "-1", "51", "nan", "inf", "1e308", "0x10"])
def test_lingers_outside_0_to_50_ms_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, hostile: str
) -> None:
    monkeypatch.setenv(f"SLUICEGATE_{name.upper()}", hostile)
    with pytest.raises(ValidationError):
        Settings()


def test_lingers_default_to_1_ms_and_0_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().ledger_linger_ms, Settings().limiter_linger_ms) == (1.0, 1.0)
    monkeypatch.setenv("SLUICEGATE_LIMITER_LINGER_MS", "0")
    assert Settings().limiter_linger_ms == 0
