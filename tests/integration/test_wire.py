"""Crafted messages on the wire cannot stop, wedge or steer a worker (worker.runtime.consumer,
worker.runtime.messages.admit): options are the worker's to decide, the id a message is acked under is the
one Redis holds it under, and whatever is malformed is dead-lettered with its reason while the
messages around it are processed exactly."""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest
import sqlalchemy as sa

from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from tests.unit.test_admission import OPTION_KEYS
from worker import cli
from worker.producer import enqueue_heartbeats
from worker.runtime.messages import store_message

NOW = time.time()


def push(broker, queue: str, fields: dict | bytes, redis_id: str | None = None) -> str:
    """Enqueue as a producer in another language would (docs/producers.md, Message formats)."""
    redis_id = redis_id or str(uuid.uuid4())
    body = fields if isinstance(fields, bytes) else json.dumps(fields)
    pipe = broker.client.pipeline(transaction=True)
    pipe.hset(f"{broker.namespace}:{queue}.msgs", redis_id, body)
    pipe.rpush(f"{broker.namespace}:{queue}", redis_id)
    pipe.execute()
    return redis_id


def store_fields(heartbeats: list, **changes) -> dict:
    message_id = str(uuid.uuid4())
    fields = {"queue_name": "heartbeats", "actor_name": "store_heartbeats", "args": [heartbeats], "kwargs": {},
              "options": {"redis_message_id": message_id}, "message_id": message_id,
              "message_timestamp": int(NOW * 1000)}  # fmt: skip
    return {**fields, **changes}


def beat(user: str, entity: str, offset: float = 0) -> dict:
    return {"user_id": user, "entity": entity, "time": NOW - 600 + offset, "project": "p"}


def stored_entities(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT entity FROM heartbeats")).scalars())


def dead_letters(capsys) -> list[dict]:
    assert cli.main(["dlq", "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_throws_option_cannot_kill_worker_threads(db, settings, broker, capsys, log_events):
    # Two crafted messages for a 2-thread worker; each fails (an invalid heartbeat), which is where
    # Dramatiq consults options["throws"]. Today that raised inside its except block and the thread died.
    for n in range(2):
        push(broker, "heartbeats", store_fields([beat("u", f"ok-{n}"), {"user_id": "u"}],
                                                options={"throws": "anything"}))  # fmt: skip
    broker.enqueue(store_message([beat("u", "behind")]))
    drain(settings, timeout=60, threads=2)
    assert stored_entities(db) == {"ok-0", "ok-1", "behind"}
    letters = dead_letters(capsys)
    assert len(letters) == 2 and all("item 1: entity: is required" in letter["error"] for letter in letters)
    assert not [e for e in log_events() if e.get("level") == "critical"], "no thread or consumer crashed"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"options": ["not", "a", "dict"]}, "malformed message: options must be a JSON dict, not list"),
        (
            {"options": {"retries": "many"}},
            "malformed message: options.retries must be a non-negative integer",
        ),
        ({"actor_name": "update_projects"}, "malformed message: no actor named 'update_projects'"),
        (
            {"queue_name": "projects"},
            "malformed message: queue_name 'projects' arrived on queue 'heartbeats'",
        ),
        ({"kwargs": [1]}, "malformed message: kwargs must be a JSON dict, not list"),
    ],
    ids=["options-not-a-dict", "retries-not-an-integer", "actor-of-another-queue", "other-queue", "kwargs"],
)
def test_malformed_messages_are_dead_lettered_with_their_reason(
    db, settings, broker, capsys, log_events, changes, reason
):
    bad = push(broker, "heartbeats", store_fields([beat("u", "crafted")], **changes))
    push(broker, "heartbeats", store_fields([beat("u", "behind")]))
    drain(settings, timeout=60, threads=2)
    assert stored_entities(db) == {"behind"}
    [letter] = dead_letters(capsys)
    assert letter["id"] == bad and letter["error"].startswith(reason)
    assert not [e for e in log_events() if e.get("level") == "critical"], "the consumer never crashed"
    # Every dlq command works on it: it cannot be retried (no worker would run it), only purged.
    assert cli.main(["dlq", "retry", "--all"]) == 0
    assert f"cannot retry {bad}" in capsys.readouterr().out
    assert cli.main(["dlq", "purge", "--all"]) == 0
    assert "purged 1 dead letter(s)" in capsys.readouterr().out
    assert dead_letters(capsys) == []


def test_dlq_commands_read_dead_letters_with_malformed_retries(db, settings, broker, capsys):
    # A dead letter written by a careless producer straight into the dead-letter queue.
    ns = broker.namespace
    fields = store_fields([beat("u", "x")], options={"retries": "lots"})
    broker.client.zadd(f"{ns}:heartbeats.XQ", {"odd": time.time() * 1000})
    broker.client.hset(f"{ns}:heartbeats.XQ.msgs", "odd", json.dumps(fields))
    [letter] = dead_letters(capsys)
    assert letter["id"] == "odd" and letter["retries"] == 0
    assert cli.main(["dlq", "retry", "odd"]) == 0
    assert "cannot retry odd" in capsys.readouterr().out
    assert cli.main(["dlq", "purge", "odd"]) == 0
    assert "purged 1 dead letter(s)" in capsys.readouterr().out
    assert dead_letters(capsys) == []


def test_the_id_in_a_message_is_never_what_gets_acked(db, settings, broker):
    # One message claims an id Redis never gave it (it used to stay unacked for ever, so `--burst`
    # never ended); another claims the id of a message behind it (its ack would drop that one).
    victim_id = str(uuid.uuid4())
    push(broker, "heartbeats", store_fields([beat("u", "foreign")], options={"redis_message_id": "nope"}))
    push(broker, "heartbeats", store_fields([beat("u", "thief")], options={"redis_message_id": victim_id}))
    push(broker, "heartbeats", store_fields([beat("u", "victim")]), redis_id=victim_id)
    drain(settings, timeout=60, threads=2)
    assert stored_entities(db) == {"foreign", "thief", "victim"}
    ns = broker.namespace
    assert broker.client.hlen(f"{ns}:heartbeats.msgs") == 0
    assert all(broker.client.scard(key) == 0 for key in broker.client.scan_iter(match=f"{ns}:__acks__.*"))


def crafted_options(rng: random.Random) -> object:
    values = [None, True, 0, -1, 2**70, 1.5, float("inf"), "", "anything", [], ["x"], {}, {"a": {"b": []}},
              "dramatiq.Worker", "store_heartbeats", int(NOW * 1000) + 500, int(NOW * 1000) + 10**12]  # fmt: skip
    if rng.random() < 0.1:
        return rng.choice([[], "options", 7, None])
    keys = rng.sample(OPTION_KEYS, rng.randint(0, 6)) + [f"x{rng.randint(0, 9)}"] * rng.randint(0, 1)
    return {key: rng.choice(values) for key in keys}


def crafted_message(rng: random.Random, items: list) -> tuple[str, dict | bytes]:
    """A message for a queue, with crafted options or a wrong shape; its heartbeats from `items`."""
    queue = rng.choice(["heartbeats", "heartbeats", "heartbeats.DQ", "projects", "languages.DQ", "recompute"])
    if queue.startswith("heartbeats"):
        fields = store_fields(items, queue_name=queue)
    elif queue == "recompute":
        keys = [[item["user_id"], time.strftime("%Y-%m-%d", time.gmtime(item["time"]))] for item in items[:3]]
        fields = store_fields(keys, queue_name=queue, actor_name="recompute_days")
    else:
        actor = "update_projects" if queue == "projects" else "update_languages"
        fields = {**store_fields([], queue_name=queue, actor_name=actor), "args": [],
                  "kwargs": {"users": sorted({item["user_id"] for item in items})}}  # fmt: skip
    fields["options"] = crafted_options(rng)
    shape = rng.random()
    if shape < 0.05:
        return queue, b"\xff" + json.dumps(fields).encode()
    if shape < 0.1:
        del fields[rng.choice(list(fields))]
    elif shape < 0.15:
        fields[rng.choice(list(fields))] = rng.choice([None, 1, "x", [], {}])
    elif shape < 0.2:
        fields["extra"] = 1
    return queue, fields


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crafted_messages_then_a_normal_stream_is_stored_exactly(
    db, settings, broker, capsys, log_events, seed
):
    """Crafted messages (every option Dramatiq or hbw reads, with values of every JSON type, and
    wrong shapes) are pushed between the batches of a normal stream: the worker drains, what each
    admitted crafted message carried is stored, every other one is dead-lettered with a reason, and
    the tables equal the reference computed from exactly what was admitted."""
    rng = random.Random(seed)
    stream = streams.generate(seed=seed, users=4, days=2, invalid_share=0.0)
    crafted_items: dict[str, list] = {}
    for batch in streams.random_batches(rng, stream.items, low=20, high=200):
        enqueue_heartbeats(batch, batch_size=100, broker=broker)
        for _ in range(rng.randint(1, 3)):
            items = [beat(f"fuzz-{seed}", f"crafted-{len(crafted_items)}-{n}", offset=rng.random() * 500)
                     for n in range(rng.randint(1, 3))]  # fmt: skip
            queue, fields = crafted_message(rng, items)
            redis_id = push(broker, queue, fields)
            if queue.startswith("heartbeats"):
                crafted_items[redis_id] = items
    drain(settings, timeout=120, threads=2)

    letters = {letter["id"]: letter for letter in dead_letters(capsys)}
    assert all(letter["error"] for letter in letters.values()), "every dead letter says why"
    admitted = [
        item for redis_id, items in crafted_items.items() if redis_id not in letters for item in items
    ]
    assert diff(reference.compute(stream.valid + admitted), snapshot(db)) == []
    assert not [e for e in log_events() if e.get("level") == "critical"], "no thread or consumer crashed"
    assert cli.main(["dlq", "purge", "--all"]) == 0
    assert f"purged {len(letters)} dead letter(s)" in capsys.readouterr().out
    assert dead_letters(capsys) == []
