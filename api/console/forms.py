"""Reading HTML forms into the API's own request schemas, and their errors back into words.

The console validates with the same pydantic models as the JSON API (`api.schemas`), so a
value the API refuses is refused here too, with the same bounds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from core.errors import InvalidRequest


def text_fields(form: FormData, names: Iterable[str]) -> dict[str, Any]:
    """The named fields that were filled in (a blank field is as good as absent)."""
    values = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            values[name] = value
    return values


def int_fields(form: FormData, names: Iterable[str]) -> dict[str, Any]:
    """Filled-in fields as integers where they are digits (else left as text, so the schema
    refuses them by name)."""
    values = text_fields(form, names)
    for name, value in values.items():
        cleaned = value.strip().replace(",", "").replace("_", "")
        if cleaned.isdigit() and len(cleaned) <= 18:
            values[name] = int(cleaned)
    return values


def field_errors(error: ValidationError) -> dict[str, str]:
    """{"email": "value is not a valid email address", ...} for the form's labels."""
    errors: dict[str, str] = {}
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "form"
        message = str(item["msg"]).removeprefix("Value error, ")
        errors.setdefault(field, message)
    return errors


def utc_day(value: str | None, *, param: str) -> dt.datetime | None:
    """`2026-12-31` -> midnight UTC at the start of that day; blank -> None."""
    if not value or not value.strip():
        return None
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"{param} must be a date like 2026-12-31", param=param) from None
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
