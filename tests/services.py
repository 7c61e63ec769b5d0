"""Locating the real PostgreSQL and Redis the suite runs against.

`.ci/run` exports DATABASE_URL and REDIS_URL. Without them the local defaults are tried.
A service that does not answer fails the test under CI=true and skips it elsewhere.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _answering(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _missing(name: str, url: str) -> None:
    message = f"{name} is not answering at {url}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: tests that need it must run)")
    pytest.skip(f"{message}; start it or set the URL to run this test")


def postgres_server_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        url = DEFAULT_POSTGRES_URL
    if not _answering(url, 5432):
        _missing("PostgreSQL", url)
    return url


def redis_server_url() -> str:
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not _answering(url, 6379):
        _missing("Redis", url)
    return url


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
