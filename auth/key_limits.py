"""Per-key limit overrides: caps a key gets inside its account tier's limits.

Stored on the key row (NULL: the tier decides). The caller commits and then invalidates the
key caches, like any access change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from auth import audit
from auth.keys import get_key
from auth.models import ApiKey
from core.errors import InvalidRequest

KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")


def key_limits(key: ApiKey) -> dict[str, int | None]:
    return {field: getattr(key, field) for field in KEY_LIMIT_FIELDS}


async def set_key_limits(
    session: AsyncSession, *, actor: str, key_id: str, changes: dict[str, int | None]
) -> ApiKey:
    """Set (a number) or clear (None) some of a key's overrides; audited with before/after."""
    key = await get_key(session, key_id=key_id)
    before = key_limits(key)
    for field, value in changes.items():
        if field not in KEY_LIMIT_FIELDS:
            raise InvalidRequest(f"Unknown key limit {field!r}.", param=field)
        if value is not None and value < 0:
            raise InvalidRequest(f"{field} cannot be negative.", param=field)
        setattr(key, field, value)
    await session.flush()
    details: dict[str, Any] = {
        field: {"from": before[field], "to": value}
        for field, value in changes.items()
        if before[field] != value
    }
    await audit.record(session, actor=actor, action="key.limits", target=key.id, details=details)
    return key
