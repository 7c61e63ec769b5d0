"""Ledger: an index on `received_at` alone.

The operator dashboard counts today's outcomes over every account
(`billing.activity.outcomes_since`); the only index with `received_at` leads with
`account_id`, so PostgreSQL scanned the whole ledger for it (a parallel sequential scan of
300,000 rows for today's 2,700; with this index, an index scan of those rows only).

Revision ID: 0005_ledger_received_at
Revises: 0004_console_sessions
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_ledger_received_at"
down_revision: str | None = "0004_console_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ledger_received_at", "ledger", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ledger_received_at", table_name="ledger")
