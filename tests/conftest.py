"""Fixtures for real services: a fresh PostgreSQL database or SQLite file per test, Redis."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from api.app import create_app
from auth.tokens import new_admin_key
from core.config import Settings
from migrations.runner import upgrade
from tests.access import Developer, onboard_developer
from tests.live import serve_in_thread
from tests.services import postgres_server_url, redis_server_url, unique_name

# Tests start and stop dozens of apps and engines in one process. A stopped engine's KV pool
# sits in reference cycles until a full collection, which CPython seldom runs on its own
# (few Python objects, much memory): collect once the process holds more than this.
COLLECT_ABOVE_BYTES = 1_500_000_000


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _resident_bytes() > COLLECT_ABOVE_BYTES:
        gc.collect()


async def _admin_execute(server_url: str, statement: str) -> None:
    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class MigratedTemplates:
    """Databases migrated once per session and copied per test (much cheaper than running
    Alembic for every test). The migrations themselves are tested in tests/api/test_migrations."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def sqlite_file(self) -> Path:
        if self._sqlite is None:
            path = self._directory / "template.db"
            upgrade(f"sqlite:///{path}")
            self._sqlite = path
        return self._sqlite

    async def postgres_database(self, server: str) -> str:
        if self._postgres is None:
            name = unique_name("sg_template")
            await _admin_execute(server, f'CREATE DATABASE "{name}"')
            self._postgres = name  # set first, so a failed upgrade is still dropped
            upgrade(make_url(server).set(database=name).render_as_string(hide_password=False))
        return self._postgres

    def drop(self) -> None:
        if self._postgres is not None:
            statement = f'DROP DATABASE IF EXISTS "{self._postgres}" WITH (FORCE)'
            asyncio.run(_admin_execute(postgres_server_url(), statement))


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("migrated"))
    yield templates
    templates.drop()


@pytest.fixture
async def postgres_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A plain `postgresql://` URL of a database created for this test and dropped after.

    Empty, unless the test also uses `migrated_db_url`: then it is copied from a template
    that was migrated once per session."""
    server = postgres_server_url()
    name = unique_name("sg_test")
    template = ""
    if "migrated_db_url" in request.fixturenames:
        templates: MigratedTemplates = request.getfixturevalue("migrated_templates")
        template = f' TEMPLATE "{await templates.postgres_database(server)}"'
    await _admin_execute(server, f'CREATE DATABASE "{name}"{template}')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sluicegate.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield redis_server_url()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test, so tests may share one Redis safely."""
    return unique_name("sgtest") + ":"


# The suite's model root: the built-in tiny models only (kept between runs), never a fetched
# real model, so the default config serves `tiny` alone whatever `make run` left in var/models.
# The real-model group (tests/inference/test_smollm2_*) finds its file in the user's root.
TEST_MODEL_ROOT = Path(__file__).resolve().parents[1] / "var" / "test-models"


@pytest.fixture(scope="session", autouse=True)
def hermetic_model_root() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLUICEGATE_MODEL_DIR", str(TEST_MODEL_ROOT))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny GPT-2 checkpoint, built once per test session."""
    from inference.tiny.build import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gpt2", "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in tiny Llama checkpoint (grouped-query attention, BOS), built once."""
    from inference.tiny.build import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


# --- the app, a migrated database and a developer key ---------------------------------------


@pytest.fixture
def migrated_db_url(database_url: str, migrated_templates: MigratedTemplates) -> str:
    """`database_url` (SQLite and PostgreSQL) with every migration applied (alembic head).

    Copied from a per-session migrated template (PostgreSQL: see `postgres_url`)."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite":
        shutil.copyfile(migrated_templates.sqlite_file(), str(parsed.database))
    return database_url


@pytest.fixture
def admin_key() -> str:
    """The admin key the test app accepts (it is the app's SLUICEGATE_ADMIN_KEY)."""
    return new_admin_key()


@pytest.fixture
def app_settings(migrated_db_url: str, admin_key: str, tmp_path: Path) -> Settings:
    """Explicit settings for a test app: migrated DB, no Redis, `admin_key`, var under tmp.

    Override this fixture in a module (or build `Settings(...)`/`model_copy(update=...)`)
    for other shapes, e.g. `redis_url=redis_url, redis_prefix=redis_prefix`.
    """
    return Settings(
        database_url=migrated_db_url,
        redis_url=None,
        admin_key=SecretStr(admin_key),
        var_dir=tmp_path / "var",
        environment="development",
    )


@pytest.fixture
def app(app_settings: Settings) -> FastAPI:
    """The app built by `create_app(app_settings)`; its lifespan has not run yet."""
    return create_app(app_settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx.AsyncClient over ASGI with the app's lifespan running (base_url http://testserver)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def developer(client: httpx.AsyncClient, admin_key: str) -> Developer:
    """A developer onboarded through HTTP (waitlist -> approve -> claim) on the default tier.

    For another tier or several developers call `tests.access.onboard_developer` directly.
    """
    return await onboard_developer(client, admin_key)


@pytest.fixture
def developer_key(developer: Developer) -> str:
    """The raw `sk-…` key of `developer`."""
    return developer.key


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free port in a thread; yields the base URL
    (e.g. http://127.0.0.1:54321; the OpenAI SDK wants base_url=f"{live_server}/v1").
    Don't combine with `client` in one test (each runs the lifespan)."""
    with serve_in_thread(app) as url:
        yield url
