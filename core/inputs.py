"""The rules every client input meets before it is stored, looked up or given to an engine.

Each rule exists because a value that broke it reached PostgreSQL, a tensor or a date
computation and failed there: a 500, or worse a whole batch shared with other tenants
(issue #11). Request schemas apply them on the way in (`SafeText` is the base of every body,
`Instant` the type of every datetime); domain functions that other doors call (the CLI, the
web console) call the `check_*` functions themselves.

- Text: no NUL and no lone surrogate, in any string at any depth. PostgreSQL refuses NUL in
  text (a lookup fails its transaction; an insert fails the ledger's whole group-commit
  batch) and no driver can encode a lone surrogate as UTF-8. SQLite takes both, which is
  how they went unnoticed. Paths and query strings get the same rule in `api.middleware`.
- Instants: timezone-aware and in [1970-01-01, 9999-01-01) UTC, so converting one to UTC,
  or a day of arithmetic either side, cannot overflow `datetime`.
- Integers: within what receives them (`INT32_MAX` for INTEGER columns and the engines'
  int32 fields, `INT64_MAX` for BIGINT and torch's int64 tensors).
- Lengths: a string stored in a column is bounded by that column (`column_length`), so a
  narrower column is a 400 on both databases, not a 500 on PostgreSQL only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ValidationInfo, model_validator

from core.errors import InvalidRequest

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)  # exclusive

UNSAFE_TEXT = "text may not contain NUL characters (\\u0000) or unpaired surrogates"
_SURROGATE = re.compile("[\ud800-\udfff]")

Loc = tuple[str | int, ...]


def text_is_safe(text: str) -> bool:
    # isascii() is O(1) in CPython, so the regex only ever runs over non-ASCII text.
    return "\x00" not in text and (text.isascii() or _SURROGATE.search(text) is None)


# Values that hold no text; checked by exact type first, because this walk runs over every
# generation request (isinstance against ABCs such as Mapping costs microseconds each).
_NO_TEXT: frozenset[type] = frozenset({int, float, bool, type(None)})


def unsafe_text_loc(value: Any, loc: Loc = ()) -> Loc | None:
    """Where the first unsafe string in `value` is (`("messages", 0, "content")`), or None.

    Walks strings, lists, tuples, dicts (keys and values) and pydantic models at any depth.
    """
    kind = type(value)
    if kind in _NO_TEXT:
        return None
    if kind is str or isinstance(value, str):
        return None if text_is_safe(value) else loc
    if kind is list or kind is tuple:
        items: Iterable[tuple[str | int, Any]] = enumerate(value)
    elif kind is dict or isinstance(value, Mapping):
        if any(unsafe_text_loc(key) is not None for key in value):
            return loc
        items = value.items()
    elif isinstance(value, BaseModel):
        items = value.__dict__.items()
    else:
        return None
    for name, item in items:
        if type(item) in _NO_TEXT:
            continue
        found = unsafe_text_loc(item, (*loc, name))
        if found is not None:
            return found
    return None


def loc_to_param(loc: Loc) -> str | None:
    """`("messages", 0, "content")` -> `messages[0].content` (docs/WIRE.md's `param`)."""
    param = ""
    for part in loc:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param or None


def check_text(value: object, *, param: str | None = None) -> None:
    """Raise `InvalidRequest` if any string in `value` breaks the text rule."""
    loc = unsafe_text_loc(value, (param,) if param else ())
    if loc is not None:
        name = loc_to_param(loc)
        message = f"Invalid value for '{name}'" if name else "Invalid request"
        raise InvalidRequest(f"{message}: {UNSAFE_TEXT}.", param=name, code="invalid_value")


# Validation context saying the caller has proved the text rule holds (see `json_text_is_safe`).
TEXT_IS_SAFE: Mapping[str, bool] = MappingProxyType({"text_is_safe": True})


def json_text_is_safe(raw: bytes) -> bool:
    """True when no string pydantic parses out of the JSON `raw` can break the text rule.

    pydantic's JSON parser refuses raw control characters, lone surrogate escapes and bytes
    that are not UTF-8, so a NUL can only come from the escape `\\u0000`. This runs on every
    generation request, and searching the bytes costs a tenth of walking the parsed model
    (a 675-byte chat body, thread time: 0.6 us against 6.6 us, load ~12).
    """
    return b"\\u0000" not in raw


class SafeText(BaseModel):
    """Base of every request body: no string anywhere in it breaks the text rule.

    A check over the whole validated model, not a constrained `str` type per field, so a
    field added later (or a `dict[str, Any]`) cannot be missed. Raises `InvalidRequest`
    (which pydantic lets through) so the 400 names the field; `_param_of` lets a schema
    family name fields its own way. Validated with `context=TEXT_IS_SAFE`, it trusts the
    caller and skips the walk.
    """

    @model_validator(mode="after")
    def _text_rule(self, info: ValidationInfo) -> Self:
        if info.context is TEXT_IS_SAFE:
            return self
        loc = unsafe_text_loc(self)
        if loc is not None:
            param = self._param_of(loc)
            raise InvalidRequest(
                f"Invalid value for '{param}': {UNSAFE_TEXT}.", param=param, code="invalid_value"
            )
        return self

    @classmethod
    def _param_of(cls, loc: Loc) -> str | None:
        return loc_to_param(loc)


# --- instants ----------------------------------------------------------------------------

INSTANT_RANGE = f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)"


def instant_in_range(value: dt.datetime) -> dt.datetime:
    """`value` if it is aware and within [EARLIEST, LATEST) in UTC; `ValueError` otherwise."""
    if value.tzinfo is None:
        raise ValueError("must carry a timezone offset")
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(INSTANT_RANGE) from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(INSTANT_RANGE)
    return value


def check_instant(value: dt.datetime, *, param: str) -> dt.datetime:
    try:
        return instant_in_range(value)
    except ValueError as exc:
        raise InvalidRequest(f"{param} {exc}", param=param) from None


def check_day(value: dt.date, *, param: str) -> dt.date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise InvalidRequest(f"{param} {INSTANT_RANGE}", param=param)
    return value


Instant = Annotated[AwareDatetime, AfterValidator(instant_in_range)]


# --- lengths -----------------------------------------------------------------------------


def column_length(*columns: Any) -> int:
    """The longest string every one of `columns` (mapped attributes, e.g. `ApiKey.name`) holds.

    For a value written to several columns (a price's model is also its audit row's
    target), the narrowest one decides.
    """
    lengths = [column.type.length for column in columns]
    if not lengths or any(length is None for length in lengths):
        raise TypeError("column_length needs columns of bounded string types")
    return int(min(lengths))


def check_fits(value: str | None, column: Any, *, param: str) -> None:
    """`InvalidRequest` unless `value` obeys the text rule and fits `column`."""
    if value is None:
        return
    longest = column_length(column)
    if len(value) > longest:
        raise InvalidRequest(
            f"{param} must be at most {longest} characters, got {len(value)}.", param=param
        )
    check_text(value, param=param)
