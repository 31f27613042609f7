"""What a valid heartbeat is (SPEC section 1), and its normal form.

Producers validate before enqueueing and workers validate again, because messages may come from
producers that are not ours. Validation never raises for bad input: every item gets either a
normalised heartbeat or a :class:`Rejection` with its index and a readable reason.

A normalised heartbeat is a plain dict, which is also what goes on the wire: ``type``,
``category`` and ``is_write`` always present (defaults filled in), names stripped, absent values
left out. The rules are data (jobs.heartbeat_fields). msgspec checks them first
(jobs.fast_validation, whose one Python pass also builds the normal form: defaults, empty names,
the time window, comma-separated dependencies); an item it doubts goes to pydantic-core, which
decides and words each rejection, and pydantic's output then takes the same pass.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    Required,  # pydantic needs these on Python < 3.12
)

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from jobs.fast_validation import normalised
from jobs.heartbeat_fields import CATEGORIES, MAX_INT, NAMES, REQUIRED_TEXT, TYPES

_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
# ASCII case-insensitive only: a regex's (?i) folds Unicode too, so "deſigning" (long s) would match.
_CATEGORY = (
    "^(?:"
    + "|".join(
        "".join(f"[{ch}{ch.upper()}]" if ch.isalpha() else re.escape(ch) for ch in c)
        for c in sorted(CATEGORIES)
    )
    + ")$"
)
_CATEGORY_LIST = ", ".join(sorted(CATEGORIES))


def _text(*, min_length: int = 0, max_length: int | None = None, strip: bool = False) -> Any:
    return Annotated[
        str,
        StringConstraints(
            strict=True, strip_whitespace=strip, min_length=min_length, max_length=max_length, pattern=_NO_NUL
        ),
    ]


_Count = Annotated[int, Field(strict=True, ge=0, le=MAX_INT)]


class _Incoming(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    user_id: Required[_text(min_length=1, max_length=REQUIRED_TEXT["user_id"])]
    entity: Required[_text(min_length=1, max_length=REQUIRED_TEXT["entity"])]
    type: Literal[TYPES] | None
    category: Annotated[str, StringConstraints(strict=True, pattern=_CATEGORY)] | None
    time: Required[Annotated[float, Field(strict=True, allow_inf_nan=False)]]
    project: _text(max_length=NAMES["project"], strip=True) | None
    branch: _text(max_length=NAMES["branch"], strip=True) | None
    language: _text(max_length=NAMES["language"], strip=True) | None
    is_write: StrictBool | None
    lines: _Count | None
    lineno: _Count | None
    cursorpos: _Count | None
    project_root_count: _Count | None
    line_additions: _Count | None
    line_deletions: _Count | None
    dependencies: list[_text()] | _text() | None
    user_agent: _text(max_length=NAMES["user_agent"], strip=True) | None
    machine: _text(max_length=NAMES["machine"], strip=True) | None


_VALIDATOR = TypeAdapter(_Incoming)


@dataclass(frozen=True, slots=True)
class Unparseable:
    """Stands in for an input item that could not even be decoded (bad JSON, NUL byte)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str

    def __str__(self) -> str:
        return f"item {self.index}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Validated:
    #: Normalised heartbeats (dicts), in input order.
    accepted: list[dict[str, Any]]
    #: Input index of each accepted heartbeat, parallel to `accepted`.
    accepted_indexes: list[int]
    rejected: list[Rejection]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_LABELS = ("function-", "constrained-", "list[", "str", "int", "float", "bool", "literal[", "nullable[")


def _location(loc: tuple) -> list[str]:
    """The field path, without the union-branch and type labels pydantic adds."""
    return [str(p) for p in loc if isinstance(p, int) or not str(p).startswith(_LABELS)]


def describe_errors(error: ValidationError) -> str:
    """One line naming each bad field, e.g. ``time: Input should be a valid number (got string)``."""
    errors = error.errors(include_url=False)
    # When one branch of a union has a specific complaint deeper inside (dependencies.1: ...),
    # the other branches' "wrong type" complaints about the whole field are noise.
    deep = {tuple(_location(e["loc"]))[:1] for e in errors if len(_location(e["loc"])) > 1}
    parts = []
    for err in errors:
        path, kind, msg = _location(err["loc"]), err["type"], err["msg"].removeprefix("Value error, ")
        if kind == "none_required" or (len(path) == 1 and tuple(path) in deep and kind.endswith("_type")):
            continue
        if kind == "missing":
            msg = "is required"
        elif kind == "string_pattern_mismatch":
            nul = (err.get("ctx") or {}).get("pattern") == _NO_NUL
            msg = "must not contain a NUL character" if nul else f"must be one of: {_CATEGORY_LIST}"
        elif kind == "literal_error":
            msg = f"{msg} (got {err.get('input')!r:.40})"
        elif kind.endswith("_type"):
            msg = f"{msg} (got {_json_type(err.get('input'))})"
        parts.append(f"{'.'.join(path)}: {msg}" if path else msg)
    return "; ".join(dict.fromkeys(parts))


def validate_heartbeat(item: Any, *, now: float | None = None) -> dict[str, Any]:
    """Validate and normalise one item; raises ValueError with a readable reason."""
    return _validated(item, now or _time.time())


def validate_heartbeats(items: Iterable[Any], *, now: float | None = None) -> Validated:
    """Validate a batch; bad items are rejected with their index, the rest accepted."""
    now = now or _time.time()
    accepted: list[dict[str, Any]] = []
    indexes: list[int] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            accepted.append(_validated(item, now))
        except ValueError as e:
            rejected.append(Rejection(index, str(e)))
        else:
            indexes.append(index)
    return Validated(accepted, indexes, rejected)


def _validated(item: Any, now: float) -> dict[str, Any]:
    if type(item) is dict and (heartbeat := normalised(item, now)) is not None:
        return heartbeat
    # Not an object, invalid, or the fast path could not be sure: pydantic decides and words why.
    checked = checked_by_pydantic(item)
    heartbeat = normalised(checked, now)  # (pydantic's output leaves no doubt)
    if heartbeat is None:
        raise AssertionError(f"the fast path doubts pydantic's output for fields {sorted(checked)}")
    return heartbeat


def checked_by_pydantic(item: Any) -> dict[str, Any]:
    """The slow path's checks: the fields of `item` as pydantic accepts them (not yet in the normal
    form, and the time not checked against the clock), or ValueError with the readable reason."""
    if isinstance(item, Unparseable):
        raise ValueError(item.reason)
    if not isinstance(item, dict):
        raise ValueError(f"must be a JSON object (got {_json_type(item)})")
    try:
        return _VALIDATOR.validate_python(item)
    except ValidationError as e:
        raise ValueError(describe_errors(e)) from None


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
