"""Actors on a real Redis broker: bad messages go to the dead-letter queue at once, with a
structured log line, and never take good data down with them."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
import sqlalchemy as sa

from db.derived_jobs import DERIVED_JOBS
from tests.conftest import drain
from worker.runtime.messages import store_message

NOW = time.time()


def dead_letters(broker, queue: str) -> list[dict]:
    raw = broker.client.hgetall(f"{broker.namespace}:{queue}.XQ.msgs")
    return [json.loads(value) for value in raw.values()]


def raw_message(actor: str, *args, queue: str = "heartbeats", **kwargs) -> dramatiq.Message:
    return dramatiq.Message(queue_name=queue, actor_name=actor, args=args, kwargs=kwargs, options={})


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar_one()


@pytest.mark.parametrize(
    "message",
    [
        raw_message("store_heartbeats", "not a list"),
        raw_message("store_heartbeats"),
        raw_message("store_heartbeats", [{"user_id": "a"}], "extra"),
        raw_message("store_heartbeats", heartbeats=[], junk=1),
        raw_message("recompute_days", [["alice", "yesterday"]], queue="recompute"),
        raw_message("update_languages", users={"user": "alice"}, queue="languages"),
        raw_message("update_projects", "alice", queue="projects"),
    ],
    ids=[
        "wrong-type",
        "no-args",
        "extra-arg",
        "bad-kwargs",
        "bad-date",
        "object-not-list",
        "positional-users",
    ],
)
def test_malformed_payload_is_dead_lettered_at_once(db, settings, broker, log_events, message):
    broker.enqueue(message)
    drain(settings)
    [dead] = dead_letters(broker, message.queue_name)
    assert dead["message_id"] == message.message_id
    assert "retries" not in dead["options"], "a poison message must not be retried"
    [event] = [e for e in log_events() if e["event"] == "message.dead_lettered"]
    assert event["message_id"] == message.message_id
    assert event["error"].startswith("PoisonMessage")


def test_partly_invalid_batch_stores_the_valid_ones_and_dead_letters_the_message(
    db, settings, broker, log_events
):
    good = [{"user_id": "u", "entity": f"e{i}", "time": NOW - 100 + i} for i in range(3)]
    bad = {"user_id": "u", "entity": "x", "time": "yesterday"}
    message = store_message([good[0], bad, good[1], good[2]])
    broker.enqueue(message)
    drain(settings)
    assert stored(db) == 3
    [dead] = dead_letters(broker, "heartbeats")
    assert dead["message_id"] == message.message_id
    [event] = [e for e in log_events() if e["event"] == "message.dead_lettered"]
    assert "item 1: time" in event["error"]

    # Retrying the dead letter stores nothing twice.
    broker.enqueue(dramatiq.Message(**{**dead, "options": {}}))
    drain(settings)
    assert stored(db) == 3


def test_message_for_an_unknown_actor_is_dead_lettered(db, settings, broker):
    message = raw_message("store_heartbeat")  # a typo in a non-Python producer
    broker.enqueue(message)
    drain(settings)
    assert [d["message_id"] for d in dead_letters(broker, "heartbeats")] == [message.message_id]


def test_one_summary_line_per_message_with_its_id(db, settings, broker, log_events):
    message = store_message([{"user_id": "u", "entity": "e", "time": NOW - 10, "project": "p"}])
    broker.enqueue(message)
    drain(settings)
    events = log_events()
    done = [e for e in events if e["event"] == "message.done"]
    [store_done] = [e for e in done if e["actor"] == "store_heartbeats"]
    assert store_done["message_id"] == message.message_id and store_done["inserted"] == 1
    assert {e["actor"] for e in done} == {"store_heartbeats"} | {job.actor for job in DERIVED_JOBS}
    assert all(e["duration_ms"] >= 0 and e["message_id"] for e in done)


def test_a_non_python_producer_can_enqueue_with_plain_redis_commands(db, settings, broker):
    """Exactly what docs/producers.md, "Message formats", tells other languages to do."""
    import uuid

    message_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "queue_name": "heartbeats",
            "actor_name": "store_heartbeats",
            "args": [
                [
                    {
                        "user_id": "go-user",
                        "entity": "main.go",
                        "time": NOW - 30,
                        "project": "svc",
                        "language": "Go",
                        "category": None,
                        "lineno": None,
                    }
                ]
            ],
            "kwargs": {},
            "options": {"redis_message_id": message_id},
            "message_id": message_id,
            "message_timestamp": int(NOW * 1000),
        }
    )
    ns = settings.redis_namespace
    pipe = broker.client.pipeline(transaction=True)  # MULTI / EXEC
    pipe.hset(f"{ns}:heartbeats.msgs", message_id, body)
    pipe.rpush(f"{ns}:heartbeats", message_id)
    pipe.execute()
    drain(settings)
    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT user_id, project, language, category FROM heartbeats")).one()
        assert tuple(row) == ("go-user", "svc", "Go", "coding")
        assert conn.execute(sa.text("SELECT name FROM projects")).scalar_one() == "svc"
