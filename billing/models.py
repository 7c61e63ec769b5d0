"""Billing tables: the usage ledger, prices, daily rollups and gateway instances.

Money is integer micro-dollars (BIGINT). Times are UTC (`UTCDateTime`). The rollup `day`
is the UTC calendar day of the request's `received_at`, which is also the instant the
request's price is chosen at, so a row's day and price never change after `start`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime

# `usage_daily.price_id` for requests of a model that had no price: a rollup key column
# must be NOT NULL for `ON CONFLICT` to match, and no real price has id 0.
NO_PRICE = 0


class Status(StrEnum):
    STARTED = "started"
    OK = "ok"
    ERROR = "error"
    ABORTED = "aborted"  # the client went away mid-request
    INTERRUPTED = "interrupted"  # the gateway died; settled by the sweeper


FINAL_STATUSES = frozenset(s.value for s in Status if s is not Status.STARTED)


class Price(Base):
    """A model's price from `effective_from` on; rows are never updated once written."""

    __tablename__ = "prices"
    __table_args__ = (
        UniqueConstraint("model", "effective_from", name="uq_prices_model_effective_from"),
        CheckConstraint(
            "prompt_micros_per_1k >= 0 AND completion_micros_per_1k >= 0", name="non_negative"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    prompt_micros_per_1k: Mapped[int] = mapped_column(BigInteger)
    completion_micros_per_1k: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """One row per request, keyed by an id the gateway generates for it.

    The key is never the client's `x-request-id`: a client could replay one to have a second
    request fold into the first row (served but not billed). That id is kept alongside.
    """

    __tablename__ = "ledger"
    __table_args__ = (
        # Per-account time ranges (reconciliation, per-account audits).
        Index("ix_ledger_account_id_received_at", "account_id", "received_at"),
        # Every account's rows since an instant (the operator dashboard's error rate today).
        Index("ix_ledger_received_at", "received_at"),
        # The sweeper only ever looks at the few rows still in flight.
        Index(
            "ix_ledger_started_instance",
            "instance_id",
            postgresql_where=text("status = 'started'"),
            sqlite_where=text("status = 'started'"),
        ),
        CheckConstraint(
            "status IN ('started', 'ok', 'error', 'aborted', 'interrupted')", name="status"
        ),
    )

    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(40), ForeignKey("accounts.id"))
    key_id: Mapped[str] = mapped_column(String(40), ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    first_token_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    user: Mapped[str | None] = mapped_column(String(256))
    # Chosen when the row is started (the price in effect at `received_at`); NULL: unpriced.
    price_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("prices.id"))
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The gateway process that owns the row while it is `started` (see billing/sweeper.py).
    instance_id: Mapped[str] = mapped_column(String(64))


class UsageDaily(Base):
    """Sums of finalised ledger rows per (account, day, key, model, price).

    The price is part of the key so an invoice splits by price without reading the ledger;
    grouping by (account, key, model, day) just sums over it.
    """

    __tablename__ = "usage_daily"
    __table_args__ = (
        # Month-wide reports over every account scan by day.
        Index("ix_usage_daily_day", "day"),
    )

    # Primary key order serves invoices and /v1/usage: one account, a range of days.
    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    price_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)


class GatewayInstance(Base):
    """A live gateway process; its heartbeat tells the sweeper its started rows are alive."""

    __tablename__ = "billing_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
