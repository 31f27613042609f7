"""The fast path's oracle and its inputs, for tests/unit/test_fast_validation*.py: pydantic alone
with the normal form written out independently (jobs.heartbeat as it was before the fast path),
the two paths' outcomes spelled out exactly, and values at and beyond each field's limits."""

from __future__ import annotations

import enum
import random
from collections import deque
from decimal import Decimal
from typing import Any

from jobs import fast_validation
from jobs.heartbeat import checked_by_pydantic
from jobs.heartbeat_fields import CATEGORIES, COUNTS, MAX_FUTURE_SECONDS, MAX_INT, MIN_TIME, NAMES, TYPES

NOW = 1_767_225_600.0  # 2026-01-01
BASE = {"user_id": "alice", "entity": "src/app.py", "time": NOW - 60}


def reference_normal_form(item: dict[str, Any], now: float) -> dict[str, Any]:
    """jobs.heartbeat's normal form of pydantic's output as it was before the fast path."""
    when = item["time"]
    if when < MIN_TIME:
        raise ValueError("time: must be on or after 2000-01-01 (UNIX seconds)")
    if when > now + MAX_FUTURE_SECONDS:
        raise ValueError("time: must not be more than 1 hour in the future")
    out = {
        "user_id": item["user_id"],
        "entity": item["entity"],
        "type": item.get("type") or "file",
        "category": (item.get("category") or "coding").lower(),
        "time": when,
        "is_write": bool(item.get("is_write")),
    }
    for name in ("project", "branch", "language", "user_agent", "machine"):
        if value := item.get(name):
            out[name] = value
    for name in ("lines", "lineno", "cursorpos", "project_root_count", "line_additions", "line_deletions"):
        if (value := item.get(name)) is not None:
            out[name] = value
    dependencies = item.get("dependencies")
    if isinstance(dependencies, str):
        dependencies = [part for part in (p.strip() for p in dependencies.split(",")) if part]
    if dependencies:
        out["dependencies"] = dependencies
    return out


def pydantic_only(item: Any, *, now: float) -> dict[str, Any]:
    """jobs.heartbeat.validate_heartbeat as it was before the fast path: pydantic's checks, then the
    normal form written out independently above."""
    return reference_normal_form(checked_by_pydantic(item), now)


def exact(value: Any) -> Any:
    """`value` with every type spelled out: 1 is not 1.0, a str subclass is not a str, order counts."""
    if type(value) is dict:
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if type(value) is list:
        return ("list", [exact(v) for v in value])
    return (type(value), value)


def outcome(validate, item: Any) -> tuple:
    try:
        return ("accepted", exact(validate(item, now=NOW)))
    except ValueError as e:
        return ("rejected", str(e))


def fast_decides(item: dict[str, Any]) -> bool:
    try:
        return fast_validation.normalised(item, NOW) is not None
    except ValueError:  # the time window: a rejection in pydantic's words, decided fast
        return True


class Str(str):
    """A str subclass: pydantic hands back a plain str."""


class Liar(str):
    """A str subclass whose methods lie: the fast path must leave it to pydantic, which reads the text."""

    def strip(self, *chars):
        return "stripped"

    def lower(self):
        return "coding"

    def isascii(self):
        return True

    def split(self, *sep):
        return ["split"]


class Choice(enum.StrEnum):
    FILE = "file"
    CODING = "Coding"
    NAME = "name"


class One(enum.IntEnum):
    ONE = 1


class Float(float):
    pass


def texts(limit: int) -> list[Any]:
    """Text at, below and beyond `limit` characters (one, two and four UTF-8 bytes each), with
    NULs, lone surrogates, every kind of padding, and things that are not text."""
    n = limit
    return [
        "", "a", "x y", "é", "中文", "😀", "a\nb", "a\tb", "\x00", "a\x00", "\x00a", " \x00 ", "a\ud800", "\udfff",
        "\ud83d\ude00", "a" * (n - 1), "a" * n, "a" * (n + 1), "é" * n, "é" * (n + 1), "😀" * n, "😀" * (n + 1),
        "中" * n, "中" * (n - 1) + "\x00", "é" * (n - 1) + "\ud800", " a ", "\tvalue\n", "   ", "\x1cvalue\x1c", "\x1c",
        "\x1f \x1f", "\u3000a\u3000", "\x85a\xa0", "\u200ba\u200b", "\ufeffa", " " + "p" * n + " ",
        "\x1c" + "p" * n, " " + "p" * (n + 1), "\u3000" + "é" * n, None, 0, 1.5, True, [], ["a"], {}, {"a": "b"},
        b"a", Str("a"), Str(" a "), Liar(" a "), Liar("é\x00"), Choice.NAME, float("nan"),
    ]  # fmt: skip


COUNT_VALUES = [
    0, 1, 42, MAX_INT, MAX_INT + 1, -1, 2**63, -(2**63), 2**64, 10**30, True, False, 0.0, 1.0, 1.5, "1", "", None,
    float("nan"), float("inf"), One.ONE, Decimal(1), [], {}, [1], "\ud800",
]  # fmt: skip
TIME_VALUES = [
    NOW, NOW - 60, NOW - 3e7, MIN_TIME, MIN_TIME - 0.001, MIN_TIME - 1, MIN_TIME + 0.5, NOW + MAX_FUTURE_SECONDS,
    NOW + MAX_FUTURE_SECONDS + 0.001, NOW + 3601, int(NOW), int(MIN_TIME), int(MIN_TIME) - 1, 0, -1, 1e308, -1e308,
    2**53 + 1, 2**1024, 10**400, float("nan"), float("inf"), float("-inf"), "1700000000", "", True, False, None,
    Float(NOW), One.ONE, Decimal("1700000000"), [], {}, [NOW], 1700000000.123456, "\udfff",
]  # fmt: skip
TYPE_VALUES = [*TYPES, "FILE", "File", "folder", "", " file", "file ", "file\x00", "file\ud800", None, 1, True, Str("url"),
               Choice.FILE, ["file"]]  # fmt: skip
CATEGORY_VALUES = [
    *sorted(CATEGORIES), *(c.upper() for c in CATEGORIES), *(c.title() for c in CATEGORIES), "AI CODING",
    "deſigning", "codİng", "ｃoding", "coding\u200b", "coding\n", " coding", "coding ", "coding\x00", "coding\ud800",
    "", "sleeping", "ai  coding", "ai\tcoding", None, 1, True, Str("coding"), Liar("sleeping"), Choice.CODING,
    ["coding"],
]  # fmt: skip
IS_WRITE_VALUES = [True, False, None, 0, 1, 1.0, "true", "", "\ud800", [], Str("x")]
DEPENDENCY_VALUES = [
    None, "", "a", "os, sys,,json ", ",,,", " , ", "a\x00b", "a,\ud800", "é,中,😀", "a\x1c,b", "\u3000a,b\u3000",
    "x" * 5000, [], ["a"], ["os", "sys"], ["", " "], [" a "], ["a\x00"], ["\ud800"], ["é" * 300], [1], [None],
    [["a"]], ("a", "b"), {"a"}, frozenset({"b"}), {"a": 1}, deque(["a"]), [Str("a")], Str("a,b"), Liar("a,b"),
    [Liar(" a")], b"a", 1, True,
    1.5, float("nan"),
]  # fmt: skip
POOLS: dict[str, list[Any]] = {
    "user_id": texts(255),
    "entity": texts(4096),
    "time": TIME_VALUES,
    "type": TYPE_VALUES,
    "category": CATEGORY_VALUES,
    "is_write": IS_WRITE_VALUES,
    "dependencies": DEPENDENCY_VALUES,
    **{name: texts(limit) for name, limit in NAMES.items()},
    **dict.fromkeys(COUNTS, COUNT_VALUES),
}
EXTRAS: list[tuple[Any, Any]] = [
    ("junk", [1, {"deep": None}]), ("hostname", "x"), ("timezone", "UTC"), (1, "x"), ((1, 2), None),
    (Str("lines"), 3), ("Time", "x"), ("", None), ("\ud800", 1), ("junk", "\ud800"),
]  # fmt: skip


def valid_alone(field: str, value: Any) -> bool:
    try:
        pydantic_only({**BASE, field: value}, now=NOW)
    except ValueError:
        return False
    return True


VALID = {field: [v for v in pool if valid_alone(field, v)] for field, pool in POOLS.items()}


def random_item(rng: random.Random) -> dict[str, Any]:
    """Mostly valid values (so that many items are accepted), some from anywhere in the pools,
    fields missing, unknown fields added."""
    item: dict[Any, Any] = {}
    for field, pool in POOLS.items():
        required = field in BASE
        roll = rng.random()
        if roll < (0.03 if required else 0.4):
            continue
        item[field] = rng.choice(VALID[field] if roll < (0.93 if required else 0.9) else pool)
    for key, value in rng.sample(EXTRAS, rng.choice([0, 0, 0, 1, 2])):
        item[key] = value
    return item
