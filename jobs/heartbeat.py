"""What a valid heartbeat is (SPEC section 1), and its normal form.

Producers validate before enqueueing and workers validate again, because messages may come from
producers that are not ours. Validation never raises for bad input: every item gets either a
normalised :class:`Heartbeat` or a :class:`Rejection` with its index and a readable reason.
"""

from __future__ import annotations

import datetime as dt
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

CATEGORIES = frozenset(
    {
        "coding", "building", "indexing", "debugging", "browsing", "running tests", "writing tests",
        "manual testing", "writing docs", "communicating", "code reviewing", "researching", "learning",
        "designing", "ai coding",
    }
)  # fmt: skip
TYPES = ("file", "domain", "url", "app")

MIN_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
#: How far in the future a heartbeat may be (client clocks drift).
MAX_FUTURE_SECONDS = 3600
MAX_INT = 2**31 - 1


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL. (Lone surrogates, the other unstorable case, are already
    # rejected by pydantic as "unable to parse raw data as a unicode string".)
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _strip_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _default_if_null(default: Any):
    return BeforeValidator(lambda v: default if v is None else v)


def _split_dependencies(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    return value


def _text(min_length: int = 0, max_length: int | None = None) -> Any:
    return Annotated[
        str, Field(strict=True, min_length=min_length, max_length=max_length), AfterValidator(_storable)
    ]


def _optional_name(max_length: int) -> Any:
    """Optional names: null means absent; surrounding whitespace is stripped; empty means absent."""
    return Annotated[_text(max_length=max_length) | None, BeforeValidator(_strip_to_none)]


Count = Annotated[int, Field(strict=True, ge=0, le=MAX_INT)]


class Heartbeat(BaseModel):
    """A heartbeat in normal form. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: _text(1, 255)
    entity: _text(1, 4096)
    type: Annotated[Literal["file", "domain", "url", "app"], _default_if_null("file")] = "file"
    category: Annotated[_text(), _default_if_null("coding")] = "coding"
    time: Annotated[float, Field(strict=True, allow_inf_nan=False)]
    project: _optional_name(255) = None
    branch: _optional_name(255) = None
    language: _optional_name(64) = None
    is_write: Annotated[bool, Field(strict=True), _default_if_null(False)] = False
    lines: Count | None = None
    lineno: Count | None = None
    cursorpos: Count | None = None
    project_root_count: Count | None = None
    line_additions: Count | None = None
    line_deletions: Count | None = None
    dependencies: Annotated[list[_text()] | None, BeforeValidator(_split_dependencies)] = None
    user_agent: _optional_name(1024) = None
    machine: _optional_name(255) = None

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        lowered = value.lower()
        if lowered not in CATEGORIES:
            raise ValueError(f"must be one of: {', '.join(sorted(CATEGORIES))}")
        return lowered

    @field_validator("time")
    @classmethod
    def _plausible_time(cls, value: float, info: ValidationInfo) -> float:
        now = (info.context or {}).get("now") or _time.time()
        if value < MIN_TIME:
            raise ValueError("must be on or after 2000-01-01 (UNIX seconds)")
        if value > now + MAX_FUTURE_SECONDS:
            raise ValueError("must not be more than 1 hour in the future")
        return value

    @property
    def time_us(self) -> int:
        """Time at microsecond precision: the resolution of identity and of durations."""
        return round(self.time * 1_000_000)

    def to_message(self) -> dict[str, Any]:
        """JSON-ready normal form: absent fields left out, defaults written out."""
        return self.model_dump(exclude_none=True)


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
    accepted: list[Heartbeat]
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


def describe_errors(error: ValidationError) -> str:
    """One line naming each bad field, e.g. ``time: Input should be a valid number (got string)``."""
    parts = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r:.40})"
        elif err["type"].endswith("_type"):
            msg = f"{msg} (got {_json_type(err.get('input'))})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts))


def validate_heartbeat(item: Any, *, now: float | None = None) -> Heartbeat:
    """Validate one item; raises ValueError with a readable reason."""
    if isinstance(item, Unparseable):
        raise ValueError(item.reason)
    if not isinstance(item, dict):
        raise ValueError(f"must be a JSON object (got {_json_type(item)})")
    try:
        return Heartbeat.model_validate(item, context={"now": now or _time.time()})
    except ValidationError as e:
        raise ValueError(describe_errors(e)) from None


def validate_heartbeats(items: Iterable[Any], *, now: float | None = None) -> Validated:
    """Validate a batch; bad items are rejected with their index, the rest accepted."""
    now = now or _time.time()
    accepted: list[Heartbeat] = []
    indexes: list[int] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            accepted.append(validate_heartbeat(item, now=now))
        except ValueError as e:
            rejected.append(Rejection(index, str(e)))
        else:
            indexes.append(index)
    return Validated(accepted, indexes, rejected)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
