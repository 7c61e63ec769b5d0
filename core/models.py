"""The one list of modules that define tables, so Alembic and tests see the whole schema.

Each package that adds tables adds its module name here (a module that does not exist yet
is skipped, so packages can land in any order).
"""

from __future__ import annotations

import importlib
import importlib.util

from sqlalchemy import MetaData

from core.db import Base

MODEL_MODULES: tuple[str, ...] = (
    "auth.models",
    "billing.models",
    "auth.ratelimit.models",
)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def load_metadata() -> MetaData:
    """Import every table module and return the shared metadata."""
    for module in MODEL_MODULES:
        if _exists(module):
            importlib.import_module(module)
    return Base.metadata
