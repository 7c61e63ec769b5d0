"""`sluicegate`: the operator's command line (same database and audit log as the server)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from auth import accounts, admin, keys, operations, tiers, waitlist
from auth.audit import CLI_ACTOR
from auth.models import Tier
from auth.tiers import TierLimits
from cli import models as cli_models
from cli import reports as cli_reports
from cli.common import console, run_db, settings_of, table
from core.config import Settings
from core.db import is_sqlite
from core.db_budget import over_budget, server_connections
from core.logs import uvicorn_log_options
from migrations import runner as schema

T = TypeVar("T")

app = typer.Typer(help="Operate a Sluicegate gateway.", no_args_is_help=True)
admin_app = typer.Typer(help="Admin (operator) keys.", no_args_is_help=True)
waitlist_app = typer.Typer(help="Waitlist applications.", no_args_is_help=True)
accounts_app = typer.Typer(help="Developer accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Developer API keys.", no_args_is_help=True)
tiers_app = typer.Typer(help="Tiers (rate limits and monthly quota).", no_args_is_help=True)
for sub, name in (
    (admin_app, "admin"),
    (waitlist_app, "waitlist"),
    (accounts_app, "accounts"),
    (keys_app, "keys"),
    (tiers_app, "tiers"),
):
    app.add_typer(sub, name=name)
cli_reports.register(app)  # `report …` and `prices …` (billing)
cli_models.register(app)  # `models …` (packaged models from the package index)


@app.callback()
def main_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(help="Database URL (default: DATABASE_URL or ./var SQLite)")
    ] = None,
) -> None:
    overrides = {"database_url": database_url} if database_url else {}
    ctx.obj = Settings(**overrides)  # type: ignore[arg-type]


# --- server and schema -------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Serve the API with uvicorn; models load and warm up as it starts (/readyz says when)."""
    import uvicorn  # only this command needs it

    settings = settings_of(ctx)
    os.environ["DATABASE_URL"] = settings.database_url  # workers re-read settings from the env
    warn_if_over_connection_budget(settings, workers)
    os.environ.setdefault("SLUICEGATE_PRELOAD_MODELS", "true")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        # SLUICEGATE_LOG_FORMAT=json: JSON lines; text: uvicorn's, with our loggers on it too
        **(uvicorn_log_options(settings) or {"log_config": _log_config(settings.log_level)}),
        # OpenAI-shaped 400s from uvicorn too; read deadlines and the connection cap
        http="api.http_server:JsonErrorsProtocol",
        timeout_keep_alive=settings.http_keep_alive_s,
        # SIGTERM: stop accepting, let requests in flight finish for this long, then stop
        timeout_graceful_shutdown=settings.drain_timeout_s,
    )


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus our own loggers (model loading, warm-up) on its console."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    return config


def warn_if_over_connection_budget(settings: Settings, workers: int) -> None:
    """The pool rule (core/db_budget.py) for this server's share; other replicas add theirs."""
    if is_sqlite(settings.database_url):
        return
    try:
        server = run_db(settings, server_connections)
    except (SQLAlchemyError, OSError) as error:
        console().print(f"[yellow]warning:[/yellow] could not read max_connections: {error}")
        return
    per_process = settings.connections_per_process
    problem = over_budget(per_process=per_process, workers=workers, server=server)
    if problem:
        console().print(f"[yellow]warning:[/yellow] {problem}")


@app.command()
def migrate(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="Target revision")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to --revision instead")] = False,
) -> None:
    """Apply (or roll back) database migrations."""
    url = settings_of(ctx).database_url
    if downgrade:
        schema.downgrade(url, revision)
    else:
        schema.upgrade(url, revision)
    console().print(f"database at revision [bold]{revision}[/bold]")


# --- admin keys --------------------------------------------------------------------------


@admin_app.command("create-key")
def admin_create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who or what holds this key")] = "operator",
    write: Annotated[
        Path | None, typer.Option(help="Also write the key to this file (0600)")
    ] = None,
) -> None:
    """Create an admin key; it is printed once and stored only as a hash."""

    async def work(session: AsyncSession) -> admin.CreatedAdminKey:
        return await operations.create_admin_key(session, actor=CLI_ACTOR, name=name)

    created = run_db(settings_of(ctx), work)
    if write is not None:
        write_secret_file(write, created.raw)
    console().print(f"admin key [bold]{created.credential.id}[/bold] (shown once):")
    typer.echo(created.raw)


@admin_app.command("bootstrap")
def admin_bootstrap(ctx: typer.Context) -> None:
    """First run: make sure an admin key exists (SLUICEGATE_ADMIN_KEY, or ./var/admin-key)."""
    settings = settings_of(ctx)
    if settings.admin_key is not None:
        console().print("admin key: SLUICEGATE_ADMIN_KEY (from the environment)")
        return
    path = settings.admin_key_file
    if path.exists():
        existing = path.read_text().strip()

        async def active(session: AsyncSession) -> bool:
            return await admin.admin_key_is_active(session, raw_key=existing)

        if run_db(settings, active):
            console().print(f"admin key: in {path} (created on the first run)")
            return

    async def work(session: AsyncSession) -> admin.CreatedAdminKey:
        return await operations.create_admin_key(session, actor=CLI_ACTOR, name="first-run")

    created = run_db(settings, work)
    write_secret_file(path, created.raw)
    console().print(f"[bold green]Created an admin key[/bold green], saved to {path} (mode 0600):")
    typer.echo(created.raw)


@admin_app.command("list-keys")
def admin_list_keys(ctx: typer.Context) -> None:
    """Admin keys (prefixes only)."""
    rows = run_db(settings_of(ctx), admin.list_admin_keys)
    table(
        "admin keys",
        ("id", "name", "prefix", "created", "revoked"),
        ((r.id, r.name, r.prefix, r.created_at, r.revoked_at) for r in rows),
    )


def write_secret_file(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    path.chmod(0o600)  # also when the file existed with looser bits


# --- waitlist ----------------------------------------------------------------------------


@waitlist_app.command("list")
def waitlist_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending | approved | rejected")] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Applications, oldest first."""
    if status not in (None, "pending", "approved", "rejected"):
        raise typer.BadParameter("status must be pending, approved or rejected")

    async def work(session: AsyncSession) -> list[Any]:
        return await waitlist.list_applications(session, status=status, limit=limit)  # type: ignore[arg-type]

    rows = run_db(settings_of(ctx), work)
    table(
        f"waitlist ({status or 'all'})",
        ("id", "email", "name", "organization", "status", "applied", "use case"),
        ((r.id, r.email, r.name, r.organization, r.status, r.created_at, r.use_case) for r in rows),
    )


@waitlist_app.command("approve")
def waitlist_approve(
    ctx: typer.Context,
    application_id: str,
    tier: Annotated[str | None, typer.Option(help="Tier (default: settings.default_tier)")] = None,
) -> None:
    """Approve an application and open its account."""
    settings = settings_of(ctx)

    async def work(session: AsyncSession) -> Any:
        return await operations.approve_application(
            session,
            actor=CLI_ACTOR,
            application_id=application_id,
            tier=tier or settings.default_tier,
        )

    application = run_db(settings, work)
    console().print(f"approved {application.id}: account {application.account_id}")


@waitlist_app.command("reject")
def waitlist_reject(
    ctx: typer.Context,
    application_id: str,
    reason: Annotated[str | None, typer.Option(help="Told to the applicant")] = None,
) -> None:
    """Reject an application."""

    async def work(session: AsyncSession) -> Any:
        return await operations.reject_application(
            session, actor=CLI_ACTOR, application_id=application_id, reason=reason
        )

    application = run_db(settings_of(ctx), work)
    console().print(f"rejected {application.id}")


# --- accounts and keys -------------------------------------------------------------------


@accounts_app.command("list")
def accounts_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="active | suspended")] = None,
    tier: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Accounts, oldest first."""
    if status not in (None, "active", "suspended"):
        raise typer.BadParameter("status must be active or suspended")

    async def work(session: AsyncSession) -> list[Any]:
        return await accounts.list_accounts(session, status=status, tier=tier, limit=limit)  # type: ignore[arg-type]

    rows = run_db(settings_of(ctx), work)
    table(
        "accounts",
        ("id", "email", "name", "organization", "tier", "status", "created"),
        ((r.id, r.email, r.name, r.organization, r.tier, r.status, r.created_at) for r in rows),
    )


def _set_account(ctx: typer.Context, account_id: str, **change: str) -> None:
    async def work(session: AsyncSession) -> Any:
        return await operations.change_account(
            session,
            actor=CLI_ACTOR,
            account_id=account_id,
            **change,  # type: ignore[arg-type]
        )

    account = run_db(settings_of(ctx), work, invalidate=True)
    console().print(f"{account.id}: tier {account.tier}, {account.status}")


@accounts_app.command("suspend")
def accounts_suspend(ctx: typer.Context, account_id: str) -> None:
    """Suspend an account: its keys stop working within seconds."""
    _set_account(ctx, account_id, status="suspended")


@accounts_app.command("reinstate")
def accounts_reinstate(ctx: typer.Context, account_id: str) -> None:
    """Reinstate a suspended account."""
    _set_account(ctx, account_id, status="active")


@accounts_app.command("set-tier")
def accounts_set_tier(ctx: typer.Context, account_id: str, tier: str) -> None:
    """Move an account to another tier."""
    _set_account(ctx, account_id, tier=tier)


@keys_app.command("list")
def keys_list(ctx: typer.Context, account_id: str) -> None:
    """An account's keys (prefixes only; secrets are never stored)."""

    async def work(session: AsyncSession) -> list[Any]:
        await accounts.get_account(session, account_id=account_id)
        return await keys.list_keys(session, account_id=account_id)

    rows = run_db(settings_of(ctx), work)
    table(
        f"keys of {account_id}",
        ("id", "name", "prefix", "models", "created", "expires", "revoked"),
        (
            (
                r.id,
                r.name,
                r.prefix,
                ",".join(r.allowed_models or ["*"]),
                r.created_at,
                r.expires_at,
                r.revoked_at,
            )
            for r in rows
        ),
    )


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key: it stops working within seconds."""

    async def work(session: AsyncSession) -> Any:
        return await operations.revoke_key(session, actor=CLI_ACTOR, key_id=key_id)

    key = run_db(settings_of(ctx), work, invalidate=True)
    console().print(f"revoked {key.id} ({key.prefix}…)")


# --- tiers -------------------------------------------------------------------------------


@tiers_app.command("list")
def tiers_list(ctx: typer.Context) -> None:
    """Tiers and their limits."""
    rows = run_db(settings_of(ctx), tiers.list_tiers)
    table(
        "tiers",
        ("name", "requests/min", "tokens/min", "concurrent", "tokens/month"),
        (
            (
                r.name,
                r.requests_per_minute,
                r.tokens_per_minute,
                r.max_concurrent_requests,
                r.tokens_per_month,
            )
            for r in rows
        ),
    )


@tiers_app.command("set")
def tiers_set(
    ctx: typer.Context,
    name: str,
    requests_per_minute: Annotated[int | None, typer.Option("--rpm", min=0)] = None,
    tokens_per_minute: Annotated[int | None, typer.Option("--tpm", min=0)] = None,
    max_concurrent_requests: Annotated[int | None, typer.Option("--concurrency", min=0)] = None,
    tokens_per_month: Annotated[int | None, typer.Option("--tokens-per-month", min=0)] = None,
) -> None:
    """Change a tier's limits, or create it when every limit is given."""
    given = {
        field: value
        for field, value in zip(
            tiers.LIMIT_FIELDS,
            (requests_per_minute, tokens_per_minute, max_concurrent_requests, tokens_per_month),
            strict=True,
        )
        if value is not None
    }
    if not given:
        raise typer.BadParameter(
            "give at least one of --rpm, --tpm, --concurrency, --tokens-per-month"
        )

    async def work(session: AsyncSession) -> Any:
        if await session.get(Tier, name) is None and len(given) == len(tiers.LIMIT_FIELDS):
            return await operations.create_tier(
                session, actor=CLI_ACTOR, name=name, limits=TierLimits(**given)
            )
        return await operations.update_tier(session, actor=CLI_ACTOR, name=name, changes=given)

    tier = run_db(settings_of(ctx), work, invalidate=True)
    console().print(
        f"tier {tier.name}: {tier.requests_per_minute} req/min, {tier.tokens_per_minute} tok/min, "
        f"{tier.max_concurrent_requests} concurrent, {tier.tokens_per_month} tok/month"
    )


def main() -> None:
    app()
