"""What a worker takes from the wire (worker.runtime.messages.admit): whatever a producer writes, a
message either comes out with only the options the worker decides, or is refused with a reason;
nothing else ever escapes (an escaping error would crash-loop a consumer)."""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.runtime.messages import MalformedMessage, admit

ACTORS = {
    "store_heartbeats": dramatiq.Actor(lambda: None, actor_name="store_heartbeats", queue_name="heartbeats",
                                       priority=0, broker=StubBroker(), options={}),
}  # fmt: skip

#: Every option Dramatiq or hbw reads from a message (dramatiq 2.x worker, middleware, brokers).
OPTION_KEYS = [
    "redis_message_id", "eta", "retries", "max_retries", "min_backoff", "max_backoff", "retry_when", "throws",
    "time_limit", "max_age", "on_success", "on_failure", "on_retry_exhausted", "pipe_target", "pipe_ignore",
    "notify_shutdown", "store_results", "result_ttl", "group_completion_uuid", "group_completion_callbacks",
    "delay", "traceback", "requeue_timestamp", "batch_id", "hbw_started", "hbw_error", "hbw_metrics_started",
]  # fmt: skip
KEPT = {"redis_message_id", "batch_id", "retries", "eta"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
options = st.dictionaries(st.sampled_from(OPTION_KEYS) | st.text(max_size=12), json_values, max_size=6)


def message(**changes):
    fields = {"queue_name": "heartbeats", "actor_name": "store_heartbeats", "args": [[{"user_id": "u"}]],
              "kwargs": {}, "options": {}, "message_id": "m-1", "message_timestamp": 0}  # fmt: skip
    return {**fields, **changes}


@settings(max_examples=1500, deadline=None)
@given(wire_options=options, queue=st.sampled_from(["heartbeats", "heartbeats.DQ"]))
def test_only_the_options_the_worker_decides_survive(wire_options, queue):
    try:
        admitted = admit(message(options=wire_options, queue_name=queue), queue=queue, actors=ACTORS,
                         redis_id="the-real-id")  # fmt: skip
    except MalformedMessage as e:
        assert str(e).startswith("malformed message: options.")
        return
    assert set(admitted.options) <= KEPT
    assert admitted.options["redis_message_id"] == "the-real-id"
    assert isinstance(admitted.options.get("retries", 0), int) and admitted.options.get("retries", 0) >= 0
    assert "eta" not in admitted.options or queue.endswith(".DQ")


@settings(max_examples=1500, deadline=None)
@given(
    fields=json_values | st.dictionaries(st.sampled_from(list(message())) | st.text(max_size=8), json_values)
)
def test_any_shape_is_admitted_or_refused_with_a_reason(fields):
    try:
        admitted = admit(fields, queue="heartbeats", actors=ACTORS, redis_id="r")
    except MalformedMessage as e:
        assert str(e).startswith("malformed message: ")
    else:
        assert admitted.actor_name == "store_heartbeats" and admitted.queue_name == "heartbeats"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"options": ["throws"]}, "options must be a JSON dict, not list"),
        ({"options": {"retries": "3"}}, "options.retries must be a non-negative integer"),
        ({"options": {"retries": -1}}, "options.retries must be a non-negative integer"),
        ({"actor_name": "os.system"}, "no actor named 'os.system' on queue 'heartbeats'"),
        ({"queue_name": "projects"}, "queue_name 'projects' arrived on queue 'heartbeats'"),
        ({"message_timestamp": "now"}, "message_timestamp must be a JSON int, not str"),
        ({"message_id": "a\nb"}, "message_id must be 1 to 128 printable characters"),
    ],
)
def test_malformed_messages_say_why(changes, reason):
    with pytest.raises(MalformedMessage, match=reason):
        admit(message(**changes), queue="heartbeats", actors=ACTORS, redis_id="r")


def test_a_delayed_message_keeps_a_sane_eta_only():
    soon = int(time.time() * 1000) + 1000
    admitted = admit(message(queue_name="heartbeats.DQ", options={"eta": soon, "throws": "x"}),
                     queue="heartbeats.DQ", actors=ACTORS, redis_id="r")  # fmt: skip
    assert admitted.options == {"redis_message_id": "r", "eta": soon}
    with pytest.raises(MalformedMessage, match="more than 7 days ahead"):
        admit(message(queue_name="heartbeats.DQ", options={"eta": soon + 8 * 86_400_000}),
              queue="heartbeats.DQ", actors=ACTORS, redis_id="r")  # fmt: skip
    # On a ready queue an eta means nothing: dropped, so the message is not held back.
    assert (
        "eta"
        not in admit(message(options={"eta": soon}), queue="heartbeats", actors=ACTORS, redis_id="r").options
    )


def test_batch_id_is_cut_to_printable_text():
    admitted = admit(message(options={"batch_id": "a\x1b[31m" + "b" * 100}), queue="heartbeats",
                     actors=ACTORS, redis_id="r")  # fmt: skip
    assert admitted.options["batch_id"] == "a?[31m" + "b" * 58
