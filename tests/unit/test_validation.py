"""SPEC section 1: every rule, its normal form, and per-item rejection with a reason."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.heartbeat import CATEGORIES, Unparseable, validate_heartbeat, validate_heartbeats

NOW = time.time()
VALID = {"user_id": "alice", "entity": "src/app.py", "time": NOW - 60}


def ok(**changes):
    return validate_heartbeat({**VALID, **changes}, now=NOW)


def reason(**changes) -> str:
    with pytest.raises(ValueError) as e:
        validate_heartbeat({**VALID, **changes}, now=NOW)
    return str(e.value)


def test_minimal_heartbeat_gets_defaults():
    hb = ok()
    assert (hb["type"], hb["category"], hb["is_write"]) == ("file", "coding", False)
    assert not {"project", "language", "user_agent"} & set(hb)


@pytest.mark.parametrize(
    "field",
    [
        "type",
        "category",
        "project",
        "branch",
        "language",
        "is_write",
        "lineno",
        "lines",
        "dependencies",
        "user_agent",
        "machine",
        "cursorpos",
    ],
)
def test_null_means_absent(field):
    hb = ok(**{field: None})
    assert hb == ok()


def test_category_is_case_insensitive_and_stored_lower_case():
    assert ok(category="Writing Tests")["category"] == "writing tests"
    assert ok(category="AI CODING")["category"] == "ai coding"
    assert all(ok(category=c)["category"] == c for c in CATEGORIES)
    assert "category" in reason(category="sleeping")
    assert "category" in reason(category="")


@pytest.mark.parametrize("lookalike", ["deſigning", "codİng", "ｃoding", "coding\u200b"])
def test_category_case_is_ascii_only(lookalike):
    # Unicode case folding maps the long s to "s" (and the Kelvin sign to "k"): not a category.
    assert reason(category=lookalike).startswith("category: must be one of")


@pytest.mark.parametrize("value", ["file", "domain", "url", "app"])
def test_types(value):
    assert ok(type=value)["type"] == value


def test_unknown_type_is_rejected():
    assert reason(type="folder").startswith("type:")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"time": "1700000000"}, "time"),
        ({"time": True}, "time"),
        ({"time": float("nan")}, "time"),
        ({"time": float("inf")}, "time"),
        ({"time": 946684799.999}, "time"),  # just before 2000-01-01
        ({"time": NOW + 3601}, "time"),
        ({"time": None}, "time"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u" * 256}, "user_id"),
        ({"user_id": 7}, "user_id"),
        ({"entity": ""}, "entity"),
        ({"entity": "e" * 4097}, "entity"),
        ({"project": "p" * 256}, "project"),
        ({"branch": "b" * 256}, "branch"),
        ({"language": "l" * 65}, "language"),
        ({"project": 12}, "project"),
        ({"is_write": 1}, "is_write"),
        ({"is_write": "true"}, "is_write"),
        ({"lineno": -1}, "lineno"),
        ({"lines": 2**31}, "lines"),
        ({"cursorpos": 1.0}, "cursorpos"),
        ({"line_additions": True}, "line_additions"),
        ({"dependencies": [1]}, "dependencies"),
        ({"dependencies": {"a": 1}}, "dependencies"),
        ({"user_agent": "a" * 1025}, "user_agent"),
        ({"machine": "m" * 256}, "machine"),
    ],
)
def test_each_rule_rejects_with_the_field_named(changes, field):
    assert reason(**changes).startswith(f"{field}")


def test_required_fields():
    for field in ("user_id", "entity", "time"):
        item = dict(VALID)
        del item[field]
        with pytest.raises(ValueError, match=f"{field}: is required"):
            validate_heartbeat(item, now=NOW)


def test_boundaries_are_inclusive():
    assert ok(time=946684800)["time"] == 946684800  # 2000-01-01T00:00:00Z
    assert ok(time=NOW + 3600)["time"] == NOW + 3600
    assert ok(user_id="u" * 255, entity="e" * 4096, language="l" * 64, lines=2**31 - 1, lineno=0)


def test_integer_time_is_a_number():
    assert ok(time=int(NOW))["time"] == int(NOW)


def test_time_is_kept_as_given():
    assert ok(time=1700000000.123456)["time"] == 1700000000.123456


def test_names_are_stripped_and_empty_means_absent():
    hb = ok(project="  web  ", branch=" main ", language="\tPython\n", user_agent="  ", machine="")
    assert (hb["project"], hb["branch"], hb["language"]) == ("web", "main", "Python")
    assert "user_agent" not in hb and "machine" not in hb, "empty after stripping means absent"
    assert "project" not in ok(project="   ")
    assert ok(project=" " + "p" * 255 + " ")["project"] == "p" * 255  # the limit applies after stripping


def test_dependencies_list_or_comma_separated():
    assert ok(dependencies="os, sys,,json ")["dependencies"] == ["os", "sys", "json"]
    assert ok(dependencies=["os", "sys"])["dependencies"] == ["os", "sys"]


@pytest.mark.parametrize(
    "field", ["user_id", "entity", "project", "branch", "language", "user_agent", "machine"]
)
def test_nul_character_anywhere_is_invalid(field):
    assert "NUL" in reason(**{field: "a\x00b"})


def test_nul_in_category_is_not_a_category():
    assert reason(category="coding\x00").startswith("category: must be one of")


def test_nul_in_dependencies_is_invalid():
    assert "NUL" in reason(dependencies=["ok", "bad\x00"])


def test_lone_surrogate_is_invalid():
    assert "unicode" in reason(entity="bad\ud800")
    assert "unicode" in reason(dependencies=["bad\udfff"])


def test_unknown_fields_are_ignored():
    hb = ok(hostname="x", extra={"deep": [1, 2]}, timezone="UTC")
    assert hb == ok()


def test_non_objects_are_rejected():
    for item in (["a"], "string", 3, None):
        with pytest.raises(ValueError, match="must be a JSON object"):
            validate_heartbeat(item, now=NOW)


def test_unparseable_placeholder_keeps_its_reason():
    with pytest.raises(ValueError, match="line 3: not valid JSON"):
        validate_heartbeat(Unparseable("line 3: not valid JSON"), now=NOW)


def test_batch_rejects_bad_items_by_index_and_keeps_the_rest():
    items = [VALID, {**VALID, "time": "x"}, {**VALID, "entity": ""}, {**VALID, "project": "p"}, 5]
    result = validate_heartbeats(items, now=NOW)
    assert result.accepted_indexes == [0, 3]
    assert [(r.index, r.reason.split(":")[0]) for r in result.rejected] == [
        (1, "time"),
        (2, "entity"),
        (4, "must be a JSON object (got number)"),
    ]


def test_several_problems_are_all_reported():
    message = reason(time="x", entity="")
    assert "time" in message and "entity" in message


def test_normal_form_round_trips():
    hb = ok(project=" p ", category="Debugging", dependencies="a,b", lineno=3)
    again = validate_heartbeat(hb, now=NOW)
    assert again == hb


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                *VALID,
                "type",
                "category",
                "project",
                "language",
                "lineno",
                "is_write",
                "dependencies",
                "user_agent",
                "branch",
                "junk",
            ]
        ),
        json_values,
    )
)
def test_fuzz_validation_never_raises_anything_but_value_error(item):
    try:
        hb = validate_heartbeat(item, now=NOW)
    except ValueError as e:
        assert str(e)
    else:
        assert validate_heartbeat(hb, now=NOW) == hb
