"""Billing: prices, usage ledger, daily rollups, gateway instances.

Revision ID: 0002_billing
Revises: 0001_foundation
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_billing"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
STARTED = sa.text("status = 'started'")


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_micros_per_1k", sa.BigInteger(), nullable=False),
        sa.Column("completion_micros_per_1k", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "prompt_micros_per_1k >= 0 AND completion_micros_per_1k >= 0",
            name=op.f("ck_prices_non_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint("model", "effective_from", name="uq_prices_model_effective_from"),
    )
    op.create_table(
        "ledger",
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("client_request_id", sa.String(128), nullable=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("first_token_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("user", sa.String(256), nullable=True),
        sa.Column("price_id", sa.Integer(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.CheckConstraint(
            "status IN ('started', 'ok', 'error', 'aborted', 'interrupted')",
            name=op.f("ck_ledger_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_ledger_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_ledger_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["price_id"], ["prices.id"], name=op.f("fk_ledger_price_id_prices")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_ledger")),
    )
    op.create_index(
        "ix_ledger_account_id_received_at", "ledger", ["account_id", "received_at"], unique=False
    )
    op.create_index(
        "ix_ledger_started_instance",
        "ledger",
        ["instance_id"],
        unique=False,
        postgresql_where=STARTED,
        sqlite_where=STARTED,
    )
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("price_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "day", "key_id", "model", "price_id", name=op.f("pk_usage_daily")
        ),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"], unique=False)
    op.create_table(
        "billing_instances",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_instances")),
    )


def downgrade() -> None:
    op.drop_table("billing_instances")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.drop_index("ix_ledger_started_instance", table_name="ledger")
    op.drop_index("ix_ledger_account_id_received_at", table_name="ledger")
    op.drop_table("ledger")
    op.drop_table("prices")
