"""Every table of the schema in one metadata, so Alembic and tests see all of it.

Each package that adds tables adds its module here. This lives with the migrations, the
one place allowed to know every domain package's tables (`core/` sits below them all).
"""

from __future__ import annotations

from sqlalchemy import MetaData

import auth.models
import billing.models
from core.db import Base

TABLE_MODULES = (auth.models, billing.models)


def load_metadata() -> MetaData:
    """The shared metadata, with every table module imported."""
    return Base.metadata
