"""The fast path (msgspec, jobs.fast_validation) against pydantic alone, field by field: for every
item at and beyond each field's limits, missing fields and objects that are not plain dicts, the same
normalised heartbeat (same values, types and key order) or the same error text. Generated and
fuzzed items are in test_fast_validation_generated.py."""

from __future__ import annotations

import unicodedata
from collections import OrderedDict

import msgspec
import pytest
from pydantic import ValidationError

from jobs import fast_validation
from jobs.heartbeat import _VALIDATOR, Unparseable, _Incoming, validate_heartbeat
from jobs.heartbeat_fields import COUNTS, NAMES
from tests.validation_cases import BASE, NOW, POOLS, outcome, pydantic_only


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
