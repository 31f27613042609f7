"""Actor payloads: anything a producer in another language could get wrong is a PoisonMessage."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.messages import PoisonMessage, RecomputePayload, StorePayload, parse_payload, recompute_message


def test_store_payload_positional_or_keyword():
    assert parse_payload(StorePayload, ([{"a": 1}],), {}).heartbeats == [{"a": 1}]
    assert parse_payload(StorePayload, (), {"heartbeats": [{"a": 1}]}).heartbeats == [{"a": 1}]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (([],), {}),
        (({"user_id": "a"},), {}),
        (("heartbeats",), {}),
        (([{}], [{}]), {}),
        (([{}],), {"unexpected": 1}),
        ((None,), {}),
    ],
)
def test_bad_store_payloads_are_poison(args, kwargs):
    with pytest.raises(PoisonMessage):
        parse_payload(StorePayload, args, kwargs)


def test_recompute_payload_round_trips_the_wire_format():
    message = recompute_message("projects", [("alice", dt.date(2024, 3, 1))])
    assert message.args == ([["alice", "2024-03-01"]],)
    assert message.queue_name == "projects" and message.actor_name == "recompute_projects"
    payload = parse_payload(RecomputePayload, message.args, message.kwargs)
    assert payload.keys == [("alice", dt.date(2024, 3, 1))]


@pytest.mark.parametrize(
    "keys", [[["alice"]], [["alice", "not-a-date"]], [[1, "2024-03-01"]], [], "x", [["", "2024-03-01"]]]
)
def test_bad_recompute_payloads_are_poison(keys):
    with pytest.raises(PoisonMessage):
        parse_payload(RecomputePayload, (keys,), {})
