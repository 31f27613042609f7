"""The fast path (msgspec, jobs.fast_validation) against pydantic alone on whole items: random ones
mixing valid and invalid values (both paths taken, whole batches too), realistic ones (all fast),
and fuzzed ones (hypothesis), each giving the same normalised heartbeat or the same error text."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.heartbeat import validate_heartbeat, validate_heartbeats
from tests.validation_cases import NOW, POOLS, VALID, fast_decides, outcome, pydantic_only, random_item
from worker.cli.sample import generate_heartbeats


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
