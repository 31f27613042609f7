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
    MAX_FUTURE_SECONDS,
    MAX_INT,
    MIN_TIME,
    NAMES,
    REQUIRED_TEXT,
    TYPES,
)

#: What pydantic's strip_whitespace removes: Rust's str::trim, the Unicode White_Space property.
#: Python's str.strip() would also remove U+001C..U+001F, which pydantic keeps.
WHITESPACE = "".join(
    map(
        chr,
        [
            *range(0x9, 0xE),
            0x20,
            0x85,
            0xA0,
            0x1680,
            *range(0x2000, 0x200B),
            0x2028,
            0x2029,
            0x202F,
            0x205F,
            0x3000,
        ],
    )
)
#: A NUL (PostgreSQL text cannot hold one) or a lone surrogate (not UTF-8), both refused by pydantic.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
#: NaN and the infinities fail these bounds; the time window is checked in the pass below.
_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


def _name(field: str) -> Any:
    # Limited before stripping: a name within its limit is within it stripped; a longer one that
    # stripping would bring within it is left to pydantic.
    return Annotated[str, msgspec.Meta(max_length=NAMES[field])] | None


class Heartbeat(msgspec.Struct, kw_only=True, gc=False):
    """The fields of jobs.heartbeat._Incoming (a test keeps the two sets equal); unknown fields are
    ignored, absent ones are None. In the order of the normal form: msgspec looks for each key from
    where it found the previous one, so the worker's input (what producers sent) takes one look.
    Untracked by the garbage collector: text, numbers and a list of text make no cycles."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=REQUIRED_TEXT["user_id"])]
    entity: Annotated[str, msgspec.Meta(min_length=1, max_length=REQUIRED_TEXT["entity"])]
    type: Literal[TYPES] | None = None
    category: str | None = None
    time: _Finite
    is_write: bool | None = None
    project: _name("project") = None
    branch: _name("branch") = None
    language: _name("language") = None
    user_agent: _name("user_agent") = None
    machine: _name("machine") = None
    lines: _Count | None = None
    lineno: _Count | None = None
    cursorpos: _Count | None = None
    project_root_count: _Count | None = None
    line_additions: _Count | None = None
    line_deletions: _Count | None = None
    dependencies: list[str] | str | None = None


#: pydantic strips with its own code whatever the str's class; so does str.strip called this way.
_strip = str.strip


def _storable(text: str) -> bool:
    """No NUL, no lone surrogate: what pydantic refuses in the text of any field."""
    return "\x00" not in text if text.isascii() else _UNSTORABLE.search(text) is None


def normalised(item: dict[str, Any], now: float) -> dict[str, Any] | None:
    """The normal form of `item` (see jobs.heartbeat), or None when it is invalid or might be;
    raises ValueError, as pydantic's path would, when only its time is outside the window.

    Written out field by field: loops over the names and counts would cost a quarter of the whole.
    Text passed on as it came must be exactly a str: pydantic turns a subclass into a str (and one
    may override the methods called here), so the fast path leaves subclasses to pydantic."""
    try:
        hb = msgspec.convert(item, Heartbeat)
    except Exception:  # not only ValidationError: a lone surrogate in a key, or in a number, raises
        return None  # UnicodeEncodeError; whatever msgspec says, pydantic decides
    user_id, entity, category = hb.user_id, hb.entity, hb.category
    if not (type(user_id) is type(entity) is str and _storable(user_id) and _storable(entity)):
        return None
    if category is None:
        category = "coding"
    else:
        # Case folding is ASCII only: a non-ASCII lookalike is not a category, whatever lower() says
        # (today only the Kelvin sign lowers to ASCII, to a k, which no category has).
        if type(category) is not str or not category.isascii():
            return None
        if (category := category.lower()) not in CATEGORIES:
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
    # Names, stripped as pydantic strips them; empty means absent.
    if (value := hb.project) is not None and (value := _strip(value, WHITESPACE)):
        if not _storable(value):
            return None
        out["project"] = value
    if (value := hb.branch) is not None and (value := _strip(value, WHITESPACE)):
        if not _storable(value):
            return None
        out["branch"] = value
    if (value := hb.language) is not None and (value := _strip(value, WHITESPACE)):
        if not _storable(value):
            return None
        out["language"] = value
    if (value := hb.user_agent) is not None and (value := _strip(value, WHITESPACE)):
        if not _storable(value):
            return None
        out["user_agent"] = value
    if (value := hb.machine) is not None and (value := _strip(value, WHITESPACE)):
        if not _storable(value):
            return None
        out["machine"] = value
    if (value := hb.lines) is not None:
        out["lines"] = value
    if (value := hb.lineno) is not None:
        out["lineno"] = value
    if (value := hb.cursorpos) is not None:
        out["cursorpos"] = value
    if (value := hb.project_root_count) is not None:
        out["project_root_count"] = value
    if (value := hb.line_additions) is not None:
        out["line_additions"] = value
    if (value := hb.line_deletions) is not None:
        out["line_deletions"] = value
    if (dependencies := hb.dependencies) is not None:
        if isinstance(dependencies, str):  # comma-separated
            if type(dependencies) is not str or not _storable(dependencies):
                return None
            dependencies = [part for part in (p.strip() for p in dependencies.split(",")) if part]
        elif not all(type(d) is str for d in dependencies) or not _storable("".join(dependencies)):
            return None
        if dependencies:
            out["dependencies"] = dependencies
    if when < MIN_TIME:
        raise ValueError("time: must be on or after 2000-01-01 (UNIX seconds)")
    if when > now + MAX_FUTURE_SECONDS:
        raise ValueError("time: must not be more than 1 hour in the future")
    return out
