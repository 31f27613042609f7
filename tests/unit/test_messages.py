"""Actor payloads: anything a producer in another language could get wrong is a PoisonMessage."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.runtime.messages import (
    PoisonMessage,
    RecomputePayload,
    StorePayload,
    UpdatePayload,
    parse_payload,
    recompute_message,
    update_message,
)


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
    message = recompute_message([("alice", dt.date(2024, 3, 1))])
    assert message.args == ([["alice", "2024-03-01"]],)
    assert message.queue_name == "recompute" and message.actor_name == "recompute_days"
    payload = parse_payload(RecomputePayload, message.args, message.kwargs)
    assert payload.keys == [("alice", dt.date(2024, 3, 1))] and not payload.alone


def test_update_payload_round_trips_the_wire_format():
    wake = update_message("projects")
    assert (wake.queue_name, wake.actor_name, wake.args, wake.kwargs) == (
        "projects",
        "update_projects",
        (),
        {},
    )
    assert parse_payload(UpdatePayload, wake.args, wake.kwargs).users is None
    retry = update_message("user_agents", ["alice"])
    assert retry.queue_name == "user_agents" and retry.actor_name == "update_user_agents"
    assert parse_payload(UpdatePayload, retry.args, retry.kwargs).users == ["alice"]


@pytest.mark.parametrize("users", [[], "alice", [1], [""], {"alice": 1}])
def test_bad_update_payloads_are_poison(users):
    with pytest.raises(PoisonMessage):
        parse_payload(UpdatePayload, (), {"users": users})


@pytest.mark.parametrize(
    "keys", [[["alice"]], [["alice", "not-a-date"]], [[1, "2024-03-01"]], [], "x", [["", "2024-03-01"]]]
)
def test_bad_recompute_payloads_are_poison(keys):
    with pytest.raises(PoisonMessage):
        parse_payload(RecomputePayload, (keys,), {})
