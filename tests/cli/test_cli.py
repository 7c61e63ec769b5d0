"""The `sluicegate` CLI against a real database (SQLite and PostgreSQL), via typer's CliRunner."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from auth.admin import find_admin
from auth.models import Account, ApiKey, AuditEntry, Tier, WaitlistApplication
from auth.tokens import new_admin_key
from auth.waitlist import apply
from cli.main import app as cli
from core.db import create_engine, session_factory, transaction
from migrations.runner import upgrade

runner = CliRunner()


def sluicegate(url: str, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(
        cli, ["--database-url", url, *args], env={"REDIS_URL": "", **(env or {})}
    )
    assert result.exit_code == code, result.output
    return result.output


def in_db(url: str, work: Any) -> Any:
    async def go() -> Any:
        engine = create_engine(url)
        try:
            async with transaction(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def new_application(url: str, email: str) -> str:
    async def work(session: Any) -> str:
        created = await apply(session, email=email, name="Lin", use_case="Batch summaries.")
        return created.application.id

    return str(in_db(url, work))


def test_migrate_from_empty(database_url: str) -> None:
    assert "head" in sluicegate(database_url, "migrate")
    output = sluicegate(database_url, "tiers", "list")
    assert "free" in output and "standard" in output and "scale" in output
    sluicegate(database_url, "migrate", "--downgrade", "--revision", "base")
    sluicegate(database_url, "tiers", "list", code=1)


def test_admin_create_key_stores_only_the_hash(migrated_db_url: str, tmp_path: Path) -> None:
    target = tmp_path / "ops-key"
    output = sluicegate(
        migrated_db_url, "admin", "create-key", "--name", "ops", "--write", str(target)
    )
    raw = target.read_text().strip()
    assert raw.startswith("sk-admin-") and raw in output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    async def check(session: Any) -> Any:
        return await find_admin(session, raw_key=raw)

    assert in_db(migrated_db_url, check).name == "ops"
    listed = sluicegate(migrated_db_url, "admin", "list-keys")
    assert raw[:17] in listed and raw not in listed


def test_bootstrap_creates_one_key_then_reuses_it(migrated_db_url: str, tmp_path: Path) -> None:
    env = {"SLUICEGATE_VAR_DIR": str(tmp_path / "var"), "SLUICEGATE_ADMIN_KEY": ""}
    first = sluicegate(migrated_db_url, "admin", "bootstrap", env=env)
    key_file = tmp_path / "var" / "admin-key"
    raw = key_file.read_text().strip()
    assert raw in first and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = sluicegate(migrated_db_url, "admin", "bootstrap", env=env)
    assert raw not in second and key_file.read_text().strip() == raw
    with_env = sluicegate(
        migrated_db_url, "admin", "bootstrap", env={**env, "SLUICEGATE_ADMIN_KEY": new_admin_key()}
    )
    assert "SLUICEGATE_ADMIN_KEY" in with_env


def test_waitlist_accounts_keys_tiers_commands(migrated_db_url: str) -> None:
    url = migrated_db_url
    first = new_application(url, "one@example.com")
    second = new_application(url, "two@example.com")
    listed = sluicegate(url, "waitlist", "list")
    assert first in listed and second in listed and "one@example.com" in listed

    sluicegate(url, "waitlist", "approve", first, "--tier", "standard")
    sluicegate(url, "waitlist", "reject", second, "--reason", "duplicate")
    sluicegate(url, "waitlist", "approve", second, code=1)  # already rejected
    assert first not in sluicegate(url, "waitlist", "list")
    assert second in sluicegate(url, "waitlist", "list", "--status", "rejected")

    async def account_of(session: Any) -> Account:
        application = await session.get(WaitlistApplication, first)
        return await session.get(Account, application.account_id)

    account = in_db(url, account_of)
    assert account.tier == "standard"
    assert account.id in sluicegate(url, "accounts", "list")
    sluicegate(url, "accounts", "suspend", account.id)
    assert account.id in sluicegate(url, "accounts", "list", "--status", "suspended")
    sluicegate(url, "accounts", "reinstate", account.id)
    sluicegate(url, "accounts", "set-tier", account.id, "scale")
    assert in_db(url, account_of).status == "active" and in_db(url, account_of).tier == "scale"
    sluicegate(url, "accounts", "suspend", "acct_nope", code=1)

    async def add_key(session: Any) -> str:
        key = ApiKey(account_id=account.id, key_hash="0" * 64, prefix="sk-test")
        session.add(key)
        await session.flush()
        return key.id

    key_id = in_db(url, add_key)
    assert key_id in sluicegate(url, "keys", "list", account.id)
    sluicegate(url, "keys", "revoke", key_id)
    assert in_db(url, lambda s: s.get(ApiKey, key_id)).revoked_at is not None
    sluicegate(url, "keys", "revoke", "key_nope", code=1)

    sluicegate(url, "tiers", "set", "free", "--rpm", "99")
    sluicegate(
        url,
        "tiers",
        "set",
        "gold",
        "--rpm",
        "1",
        "--tpm",
        "2",
        "--concurrency",
        "3",
        "--tokens-per-month",
        "4",
    )
    sluicegate(url, "tiers", "set", "silver", "--rpm", "1", code=1)  # new tier: all limits
    assert "gold" in sluicegate(url, "tiers", "list")
    assert in_db(url, lambda s: s.get(Tier, "free")).requests_per_minute == 99

    async def cli_audit(session: Any) -> list[str]:
        rows = await session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == "cli").order_by(AuditEntry.id)
        )
        return list(rows)

    assert in_db(url, cli_audit) == [
        "waitlist.approve",
        "waitlist.reject",
        "account.update",
        "account.update",
        "account.update",
        "key.revoke",
        "tier.update",
        "tier.create",
    ]


@pytest.mark.parametrize("args", [["waitlist", "list", "--status", "x"], ["tiers", "set", "free"]])
def test_bad_arguments_exit_2(migrated_db_url: str, args: list[str]) -> None:
    sluicegate(migrated_db_url, *args, code=2)


def test_same_database_as_the_server_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    result = runner.invoke(cli, ["tiers", "list"])
    assert result.exit_code == 0 and "standard" in result.output
