"""The fast path of heartbeat validation, and the normal form that both paths end in.

pydantic (jobs.heartbeat) cost most of a worker's validation time. Here msgspec checks an item
against the same rules (jobs.heartbeat_fields) and one Python pass does what it cannot (NUL, lone
surrogates, pydantic's stripping, the ASCII-only category) while building the normal form. It
only ever accepts: an item it has the least doubt about gets None, and pydantic accepts it or
words the rejection. pydantic's output then goes through this same pass, so the normal form is
defined once and every outcome, heartbeat or error text, is what pydantic alone gave.
tests/unit/test_fast_validation.py compares the paths on items at and beyond every limit.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any, Literal

import msgspec

from jobs.heartbeat_fields import (
    CATEGORIES,
    COUNTS,
    MAX_FUTURE_SECONDS,
    MAX_INT,
    MIN_TIME,
    NAMES,
    REQUIRED_TEXT,
    TYPES,
)

#: What pydantic's strip_whitespace removes: Rust's str::trim, the Unicode White_Space property.
#: Python's str.strip() would also remove U+001C..U+001F, which pydantic keeps.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
#: A NUL (PostgreSQL text cannot hold one) or a lone surrogate (not UTF-8), both refused by pydantic.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
#: NaN and the infinities fail these bounds; the time window is checked in the pass below.
_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


def _name(field: str) -> Any:
    # Limited before stripping: a name within its limit is within it stripped; a longer one that
    # stripping would bring within it is left to pydantic.
    return Annotated[str, msgspec.Meta(max_length=NAMES[field])] | None


class Heartbeat(msgspec.Struct, gc=False):
    """The fields of jobs.heartbeat._Incoming (a test keeps the two sets equal); unknown fields are
    ignored, absent ones are None."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=REQUIRED_TEXT["user_id"])]
    entity: Annotated[str, msgspec.Meta(min_length=1, max_length=REQUIRED_TEXT["entity"])]
    time: _Finite
    type: Literal[TYPES] | None = None  # type: ignore[valid-type]
    category: str | None = None
    project: _name("project") = None
    branch: _name("branch") = None
    language: _name("language") = None
    is_write: bool | None = None
    lines: _Count | None = None
    lineno: _Count | None = None
    cursorpos: _Count | None = None
    project_root_count: _Count | None = None
    line_additions: _Count | None = None
    line_deletions: _Count | None = None
    dependencies: list[str] | str | None = None
    user_agent: _name("user_agent") = None
    machine: _name("machine") = None


def _storable(text: str) -> bool:
    """Text that pydantic's strict str with the no-NUL pattern keeps as it is: exactly a str (a
    subclass would come out converted), no NUL, no lone surrogate."""
    if text.__class__ is not str:
        return False
    return "\x00" not in text if text.isascii() else _UNSTORABLE.search(text) is None


def normalised(item: dict[str, Any], now: float) -> dict[str, Any] | None:
    """The normal form of `item` (see jobs.heartbeat), or None when it is invalid or might be;
    raises ValueError, as pydantic's path would, when only its time is outside the window."""
    try:
        hb = msgspec.convert(item, Heartbeat)
    except msgspec.ValidationError:
        return None
    user_id, entity, category = hb.user_id, hb.entity, hb.category
    if not (_storable(user_id) and _storable(entity)):
        return None
    if category is None:
        category = "coding"
    # Case folding is ASCII only: a non-ASCII lookalike is not a category, whatever lower() says.
    elif not category.isascii() or (category := category.lower()) not in CATEGORIES:
        return None
    when = hb.time
    out = {
        "user_id": user_id,
        "entity": entity,
        "type": hb.type or "file",
        "category": category,
        "time": when,
        "is_write": bool(hb.is_write),
    }
    for name in NAMES:
        if (value := getattr(hb, name)) is not None and (value := value.strip(WHITESPACE)):
            if not _storable(value):  # (empty means absent)
                return None
            out[name] = value
    for name in COUNTS:
        if (value := getattr(hb, name)) is not None:
            out[name] = value
    if (dependencies := hb.dependencies) is not None:
        if isinstance(dependencies, str):
            if not _storable(dependencies):
                return None
            dependencies = [part for part in (p.strip() for p in dependencies.split(",")) if part]
        elif not all(map(_storable, dependencies)):
            return None
        if dependencies:
            out["dependencies"] = dependencies
    if when < MIN_TIME:
        raise ValueError("time: must be on or after 2000-01-01 (UNIX seconds)")
    if when > now + MAX_FUTURE_SECONDS:
        raise ValueError("time: must not be more than 1 hour in the future")
    return out
