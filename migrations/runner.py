"""Apply or roll back the Alembic migrations (used by the CLI, `make run` and tests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

from core.db import ensure_sqlite_parent

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def _in_plain_thread(work: Callable[[], object]) -> None:
    """env.py drives an async engine with `asyncio.run`, which cannot nest in a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        work()
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(error)

    thread = threading.Thread(target=run, name="alembic")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def upgrade(database_url: str, revision: str = "head") -> None:
    ensure_sqlite_parent(database_url)
    _in_plain_thread(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str = "base") -> None:
    _in_plain_thread(lambda: command.downgrade(alembic_config(database_url), revision))
