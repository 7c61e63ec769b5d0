"""What every `sluicegate` command shares: the console, the settings, one transaction, tables."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from auth.authenticator import RedisVersion, key_cache_version_key
from core.config import Settings
from core.db import create_engine, session_factory, transaction
from core.errors import SluicegateError
from core.redis import redis_client

T = TypeVar("T")


def console() -> Console:
    # Not a terminal (pipes, tests): wide enough that ids are never folded.
    return Console() if sys.stdout.isatty() else Console(width=200)


def settings_of(ctx: typer.Context) -> Settings:
    """The main app's callback puts the settings in `ctx.obj`; a sub-app run alone reads them."""
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def run_db(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[T]], *, invalidate: bool = False
) -> T:
    """Run `work` in one committed transaction; optionally tell every gateway to drop its
    key cache (with Redis; without it the gateways' short TTL bounds staleness)."""

    async def go() -> T:
        engine = create_engine(settings.database_url)
        try:
            async with transaction(session_factory(engine)) as session:
                result = await work(session)
        finally:
            await engine.dispose()
        if invalidate:
            await publish_invalidation(settings)
        return result

    try:
        return asyncio.run(go())
    except SluicegateError as error:
        console().print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from error


async def publish_invalidation(settings: Settings) -> None:
    if not settings.redis_url:
        return
    redis = redis_client(settings.redis_url)
    try:
        await RedisVersion(redis, key_cache_version_key(settings.redis_prefix)).bump()
    except RedisError as error:
        console().print(
            f"[yellow]warning:[/yellow] could not reach Redis ({error}); "
            f"gateways pick the change up within {settings.key_cache_ttl_s:g}s"
        )
    finally:
        await redis.aclose()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*("" if value is None else str(value) for value in row))
    console().print(out)
