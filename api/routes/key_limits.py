"""Operator control of per-key limit overrides (admin key)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictInt, model_validator

from api.deps import AdminDep, IdPath, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import StrictBody
from auth.key_limits import key_limits, set_key_limits
from auth.models import ApiKey
from core.inputs import INT32_MAX

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)

SmallOverride = Annotated[StrictInt | None, Field(ge=0, le=INT32_MAX)]  # a 32-bit column
Override = Annotated[StrictInt | None, Field(ge=0, le=10**15)]


class KeyLimitsUpdate(StrictBody):
    """Fields present are changed: a number caps the key, null returns it to the tier."""

    requests_per_minute: SmallOverride = None
    tokens_per_minute: Override = None
    max_concurrent_requests: SmallOverride = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one of " + ", ".join(type(self).model_fields))
        return self

    def changes(self) -> dict[str, int | None]:
        return {field: getattr(self, field) for field in self.model_fields_set}


class KeyLimitsPublic(BaseModel):
    id: str
    object: Literal["api_key.limits"] = "api_key.limits"
    account_id: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent_requests: int | None

    @classmethod
    def of(cls, key: ApiKey) -> Self:
        return cls.model_validate({"id": key.id, "account_id": key.account_id, **key_limits(key)})


@router.patch("/keys/{key_id}/limits")
async def update_key_limits(
    key_id: IdPath,
    body: KeyLimitsUpdate,
    admin: AdminDep,
    session: SessionDep,
    services: ServicesDep,
) -> KeyLimitsPublic:
    """Caps inside the account's tier limits; effective on every process within seconds."""
    key = await set_key_limits(session, actor=admin.actor, key_id=key_id, changes=body.changes())
    await session.commit()
    await services.authenticator.invalidate()
    return KeyLimitsPublic.of(key)
