"""The fast path (msgspec, jobs.fast_validation) against pydantic alone: for every item, generated
at and beyond each field's limits, the same normalised heartbeat (same values, types and key
order) or the same error text."""

from __future__ import annotations

import datetime as dt
import enum
import random
import unicodedata
from collections import Counter, OrderedDict, deque
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jobs import fast_validation
from jobs.heartbeat import (
    _VALIDATOR,
    Unparseable,
    _Incoming,
    checked_by_pydantic,
    validate_heartbeat,
    validate_heartbeats,
)
from jobs.heartbeat_fields import CATEGORIES, COUNTS, MAX_FUTURE_SECONDS, MAX_INT, MIN_TIME, NAMES, TYPES
from worker.cli.sample import generate_heartbeats

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


def test_the_struct_has_the_fields_of_the_pydantic_model():
    fields = msgspec.structs.fields(fast_validation.Heartbeat)
    assert {f.name for f in fields} == set(_Incoming.__annotations__)
    with pytest.raises(ValidationError) as e:
        _VALIDATOR.validate_python({})
    required = {err["loc"][0] for err in e.value.errors() if err["type"] == "missing"}
    assert {f.name for f in fields if f.required} == required == set(BASE)
    # In the normal form's order, which is what lets msgspec find each key of a worker's input at once.
    full = {**BASE, "type": "url", "category": "coding", "is_write": True, "dependencies": ["a"]}
    full |= dict.fromkeys(NAMES, "x") | dict.fromkeys(COUNTS, 1)
    assert [f.name for f in fields] == list(validate_heartbeat(full, now=NOW))


@pytest.mark.parametrize("field", POOLS)
def test_each_field_at_and_beyond_its_limits(field):
    for value in POOLS[field]:
        for item in ({**BASE, field: value}, {**BASE, field: value, "project": "  web ", "lineno": 3}):
            assert outcome(validate_heartbeat, item) == outcome(pydantic_only, item), (field, value)


@pytest.mark.parametrize("field", [*BASE])
def test_a_missing_required_field(field):
    item = {k: v for k, v in BASE.items() if k != field}
    assert outcome(validate_heartbeat, item) == outcome(pydantic_only, item)
    assert outcome(validate_heartbeat, {}) == outcome(pydantic_only, {})


class Record(dict):
    """A dict subclass that hides its fields from whoever asks it nicely."""

    def get(self, key, default=None):
        return default

    def items(self):
        return iter(())


@pytest.mark.parametrize(
    "item",
    [
        OrderedDict(BASE),
        Record(BASE),
        Record({**BASE, "time": "x"}),
        [BASE],
        "{}",
        3,
        None,
        Unparseable("line 2: bad"),
    ],
    ids=lambda item: type(item).__name__,
)
def test_other_objects(item):
    assert outcome(validate_heartbeat, item) == outcome(pydantic_only, item)


def test_whitespace_and_control_characters_strip_as_pydantic_does():
    odd = [
        chr(cp)
        for cp in range(0x110000)
        if chr(cp).isspace() or unicodedata.category(chr(cp)) in {"Zs", "Zl", "Zp", "Cc", "Cf"}
    ]
    for c in odd:
        for value in (c, c + "x" + c, "x" + c, c * 3 + "é"):
            for field in ("project", "language", "user_id", "dependencies", "category"):
                item = {**BASE, field: value}
                assert outcome(validate_heartbeat, item) == outcome(pydantic_only, item), (field, hex(ord(c)))


def test_generated_items_agree_and_both_paths_are_taken():
    rng = random.Random(16)
    items = [random_item(rng) for _ in range(20_000)]
    seen: Counter[tuple[str, str]] = Counter()
    for item in items:
        expected = outcome(pydantic_only, item)
        assert outcome(validate_heartbeat, item) == expected, item
        seen[expected[0], "fast" if fast_decides(item) else "pydantic"] += 1
    # accepted fast, accepted by pydantic, outside the time window (fast), rejected by pydantic
    assert len(seen) == 4 and min(seen.values()) >= 20, seen
    batch = validate_heartbeats(items, now=NOW)
    accepted = set(batch.accepted_indexes)
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (i, pydantic_only_reason(item)) for i, item in enumerate(items) if i not in accepted
    ]


def pydantic_only_reason(item: dict[str, Any]) -> str:
    kind, reason = outcome(pydantic_only, item)
    assert kind == "rejected"
    return reason


def test_realistic_heartbeats_take_the_fast_path():
    items = generate_heartbeats(seed=3, users=3, days=2, end=dt.date(2025, 12, 31))
    assert items and all(fast_decides(item) for item in items)
    assert all(outcome(validate_heartbeat, item) == outcome(pydantic_only, item) for item in items)


#: Any text: every code point, lone surrogates too (st.text leaves those out), and often the
#: characters that matter here.
any_text = st.lists(
    st.characters(exclude_categories=()) | st.sampled_from("a ,\x00\x1c\x85\u3000é😀\ud800\udfff")
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=1000, deadline=None)
@given(
    base=st.fixed_dictionaries({}, optional={k: st.sampled_from(VALID[k]) for k in POOLS}),
    changes=st.dictionaries(st.sampled_from([*POOLS, "junk"]) | any_text, json_values, max_size=3),
)
def test_fuzz_agrees(base, changes):
    item = {**base, **changes}
    assert outcome(validate_heartbeat, item) == outcome(pydantic_only, item)
