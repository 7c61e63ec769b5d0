"""Foundation: tiers, accounts, waitlist, API keys, admin credentials, audit log.

Revision ID: 0001_foundation
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001_foundation"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

# Defaults an operator can change with `sluicegate tiers set` or PATCH /admin/tiers/{name}.
SEED_TIERS = [
    # name, requests/min, tokens/min, concurrent requests, tokens/month
    ("free", 20, 40_000, 2, 1_000_000),
    ("standard", 600, 250_000, 16, 50_000_000),
    ("scale", 3_000, 2_000_000, 64, 1_000_000_000),
]


def upgrade() -> None:
    tiers = op.create_table(
        "tiers",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("tokens_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("max_concurrent_requests", sa.Integer(), nullable=False),
        sa.Column("tokens_per_month", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tiers"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organization", sa.String(200), nullable=True),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["tier"], ["tiers.name"], name="fk_accounts_tier_tiers"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("email", name="uq_accounts_email"),
    )
    op.create_index("ix_accounts_tier", "accounts", ["tier"])
    op.create_index("ix_accounts_created_at", "accounts", ["created_at"])
    op.create_table(
        "waitlist_applications",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organization", sa.String(200), nullable=True),
        sa.Column("use_case", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claim_token_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("account_id", sa.String(40), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("claimed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_waitlist_applications_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_waitlist_applications"),
        sa.UniqueConstraint("email", name="uq_waitlist_applications_email"),
    )
    op.create_index(
        "ix_waitlist_applications_status_created",
        "waitlist_applications",
        ["status", "created_at"],
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(24), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_api_keys_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "admin_credentials",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(24), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_credentials"),
        sa.UniqueConstraint("key_hash", name="uq_admin_credentials_key_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(80), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    for column in ("actor", "action", "target", "created_at"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])

    now = datetime.now(UTC)
    op.bulk_insert(
        tiers,
        [
            {
                "name": name,
                "requests_per_minute": rpm,
                "tokens_per_minute": tpm,
                "max_concurrent_requests": concurrency,
                "tokens_per_month": monthly,
                "created_at": now,
                "updated_at": now,
            }
            for name, rpm, tpm, concurrency, monthly in SEED_TIERS
        ],
    )


def downgrade() -> None:
    for column in ("actor", "action", "target", "created_at"):
        op.drop_index(f"ix_audit_log_{column}", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("admin_credentials")
    op.drop_index("ix_api_keys_account_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_waitlist_applications_status_created", table_name="waitlist_applications")
    op.drop_table("waitlist_applications")
    op.drop_index("ix_accounts_created_at", table_name="accounts")
    op.drop_index("ix_accounts_tier", table_name="accounts")
    op.drop_table("accounts")
    op.drop_table("tiers")
