"""Limits: optional per-key overrides of the account tier's rate limits.

NULL means "the tier decides"; a value is the key's own cap, enforced inside the account's
limits (both must hold). Non-negative values are enforced by the API that writes them.

Revision ID: 0003_limits
Revises: 0002_billing
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_limits"
down_revision: str | None = "0002_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OVERRIDES = (
    ("requests_per_minute", sa.Integer()),
    ("tokens_per_minute", sa.BigInteger()),
    ("max_concurrent_requests", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name, type_ in OVERRIDES:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops columns by copying the table
    with op.batch_alter_table("api_keys") as batch:
        for name, _ in reversed(OVERRIDES):
            batch.drop_column(name)
