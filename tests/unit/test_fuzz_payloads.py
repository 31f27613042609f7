"""Whatever a producer in another language sends as actor arguments, parsing it either gives a
valid payload or raises PoisonMessage (dead-lettered at once), never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.runtime.messages import PoisonMessage, RecomputePayload, StorePayload, parse_payload

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.lists(
    st.tuples(st.text(max_size=10), st.sampled_from(["2024-01-01", "2024-13-01", "x", ""])), max_size=4
)


@settings(max_examples=1500, deadline=None)
@given(args=st.lists(json_values | keys, max_size=3), kwargs=st.dictionaries(st.text(max_size=10), json_values,
                                                                         max_size=3))  # fmt: skip
def test_payload_parsing_is_total(args, kwargs):
    for model in (StorePayload, RecomputePayload):
        try:
            payload = parse_payload(model, args, kwargs)
        except PoisonMessage as e:
            assert str(e)
        else:
            assert isinstance(payload, model)
