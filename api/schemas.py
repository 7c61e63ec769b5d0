"""Request and response schemas of the access API (waitlist, keys, accounts, tiers, audit).

Table models carry secrets (hashes); these schemas never do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from auth.models import Account, ApiKey, AuditEntry, Tier, WaitlistApplication
from core.db import utcnow
from core.inputs import INT32_MAX, Instant, SafeText, column_length


def text(max_length: int, *, min_length: int = 1) -> Any:
    """A stripped string of `min_length` to `max_length` characters."""
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


# Strings stored in a column are bounded by it (core/inputs.py), so PostgreSQL never refuses
# one that SQLite took: a narrower column changes the bound instead of causing a 500.
PersonName = Annotated[
    str, text(column_length(WaitlistApplication.name, Account.name, Account.organization))
]
KeyName = Annotated[str, text(column_length(ApiKey.name))]
ModelName = Annotated[str, text(200)]  # JSON list on the key; the ledger's model column is 200
TierName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
]
# JSON integers only (`"5"` or `true` for a limit is a client bug worth a 400).
Count = Annotated[StrictInt, Field(ge=0, le=10**15)]
# Limits stored in 32-bit INTEGER columns (PostgreSQL rejects larger values).
SmallCount = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]

T = TypeVar("T")


class StrictBody(SafeText):
    """Request bodies: unknown fields are a 400, not silently ignored; text rule of
    `core.inputs` on every string."""

    model_config = ConfigDict(extra="forbid")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool


def page_of(items: list[Any], limit: int, convert: Any) -> dict[str, Any]:
    """Routes ask for limit+1 rows; the extra one only tells whether there are more."""
    return {"data": [convert(item) for item in items[:limit]], "has_more": len(items) > limit}


# --- waitlist ----------------------------------------------------------------------------


class WaitlistCreate(StrictBody):
    email: EmailStr = Field(max_length=column_length(WaitlistApplication.email, Account.email))
    name: PersonName
    organization: PersonName | None = None
    use_case: Annotated[str, text(5000, min_length=10)] = Field(  # a TEXT column
        description="What you want to build (as the GPT-3 beta asked)"
    )


class WaitlistCreated(BaseModel):
    id: str
    object: Literal["waitlist.application"] = "waitlist.application"
    status: str
    claim_token: str = Field(description="Shown only here; needed to check status and claim")
    created_at: datetime


class WaitlistStatus(BaseModel):
    """What the applicant sees with their claim token."""

    id: str
    object: Literal["waitlist.application"] = "waitlist.application"
    status: str
    reason: str | None
    claimed: bool
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, row: WaitlistApplication) -> Self:
        return cls(
            id=row.id,
            status=row.status,
            reason=row.reason,
            claimed=row.claimed_at is not None,
            created_at=row.created_at,
            decided_at=row.decided_at,
        )


class WaitlistAdminView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["waitlist.application"] = "waitlist.application"
    email: str
    name: str
    organization: str | None
    use_case: str
    status: str
    reason: str | None
    account_id: str | None
    created_at: datetime
    decided_at: datetime | None
    claimed_at: datetime | None

    @classmethod
    def of(cls, row: WaitlistApplication) -> Self:
        return cls.model_validate(row)


class ApproveRequest(StrictBody):
    tier: TierName | None = Field(default=None, description="Defaults to the configured tier")


class RejectRequest(StrictBody):
    reason: Annotated[str, text(2000, min_length=0)] | None = None  # a TEXT column


# --- API keys ----------------------------------------------------------------------------


class KeyCreate(StrictBody):
    name: KeyName | None = None
    expires_at: Instant | None = Field(default=None, description="ISO 8601 with offset")
    allowed_models: list[ModelName] | None = Field(
        default=None, min_length=1, max_length=100, description="Omit for every model"
    )


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    account_id: str
    name: str | None
    prefix: str
    status: Literal["active", "revoked", "expired"]
    allowed_models: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> Self:
        return cls(
            id=row.id,
            account_id=row.account_id,
            name=row.name,
            prefix=row.prefix,
            status=key_status(row),
            allowed_models=row.allowed_models,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret key. Shown only in this response: store it now.")

    @classmethod
    def with_secret(cls, row: ApiKey, raw: str) -> Self:
        return cls(**KeyPublic.of(row).model_dump(exclude={"object"}), key=raw)


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


def key_status(row: ApiKey) -> Literal["active", "revoked", "expired"]:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= utcnow():
        return "expired"
    return "active"


# --- accounts, tiers, audit --------------------------------------------------------------


class AccountPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["account"] = "account"
    email: str
    name: str
    organization: str | None
    tier: str
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Account) -> Self:
        return cls.model_validate(row)


class AccountUpdate(StrictBody):
    tier: TierName | None = None
    status: Literal["active", "suspended"] | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.tier is None and self.status is None:
            raise ValueError("give at least one of tier, status")
        return self


class TierLimitsFields(BaseModel):
    requests_per_minute: SmallCount
    tokens_per_minute: Count
    max_concurrent_requests: SmallCount
    tokens_per_month: Count


class TierPublic(TierLimitsFields):
    model_config = ConfigDict(from_attributes=True)

    name: str
    object: Literal["tier"] = "tier"

    @classmethod
    def of(cls, row: Tier) -> Self:
        return cls.model_validate(row)


class TierCreate(TierLimitsFields, StrictBody):
    name: TierName


class TierUpdate(StrictBody):
    requests_per_minute: SmallCount | None = None
    tokens_per_minute: Count | None = None
    max_concurrent_requests: SmallCount | None = None
    tokens_per_month: Count | None = None

    def changes(self) -> dict[str, int]:
        return self.model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.changes():
            raise ValueError("give at least one limit to change")
        return self


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    object: Literal["audit_entry"] = "audit_entry"
    actor: str
    action: str
    target: str | None
    created_at: datetime
    details: dict[str, Any]

    @classmethod
    def of(cls, row: AuditEntry) -> Self:
        return cls.model_validate(row)
