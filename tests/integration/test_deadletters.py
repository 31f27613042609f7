"""Poison on the wire: what a careless producer can put in Redis is dead-lettered at once with
its reason, never retried forever, never blocks the messages behind it; `hbw dlq` acts on it."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import drain
from worker import cli
from worker.runtime.messages import store_message

NOW = time.time()


def push_raw(broker, queue: str, body: bytes | str) -> str:
    """Enqueue bytes exactly as a producer in another language would (docs/producers.md, Message formats)."""
    redis_id = str(uuid.uuid4())
    pipe = broker.client.pipeline(transaction=True)
    pipe.hset(f"{broker.namespace}:{queue}.msgs", redis_id, body)
    pipe.rpush(f"{broker.namespace}:{queue}", redis_id)
    pipe.execute()
    return redis_id


def heartbeat(entity: str) -> dict:
    return {"user_id": "u", "entity": entity, "time": NOW - 60, "project": "p"}


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar_one()


def nothing_held(broker) -> bool:
    ns = broker.namespace
    return not any(broker.client.scan_iter(match=f"{ns}:__acks__.*")) or all(
        broker.client.scard(key) == 0 for key in broker.client.scan_iter(match=f"{ns}:__acks__.*")
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not even utf-8", "undecodable message"),
        (b"{not json", "undecodable message"),
        (b'{"hello": "world"}', "malformed message: not Dramatiq's fields"),
        (b"[1, 2, 3]", "malformed message: a JSON list, not an object"),
    ],
    ids=["bytes", "broken-json", "wrong-fields", "not-an-object"],
)
def test_undecodable_messages_are_dead_lettered_at_once_and_do_not_block_the_queue(
    db, settings, broker, body, reason, capsys
):
    bad = push_raw(broker, "heartbeats", body)
    broker.enqueue(store_message([heartbeat("after-the-poison")]))
    drain(settings)
    assert stored(db) == 1, "the message behind the poison was processed"
    assert nothing_held(broker), "nothing left unacked"

    assert cli.main(["dlq", "list", "--json"]) == 0
    [letter] = json.loads(capsys.readouterr().out)
    assert letter["id"] == bad and letter["queue"] == "heartbeats"
    assert letter["error"].startswith(reason)

    assert cli.main(["dlq", "retry", bad]) == 0
    assert "cannot retry" in capsys.readouterr().out
    assert cli.main(["dlq", "purge", bad]) == 0
    assert "purged 1" in capsys.readouterr().out
    assert cli.main(["dlq", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_message_without_its_redis_id_is_processed_and_acked(db, settings, broker):
    message_id = str(uuid.uuid4())
    body = json.dumps({"queue_name": "heartbeats", "actor_name": "store_heartbeats", "args": [[heartbeat("a")]],
                       "kwargs": {}, "options": {}, "message_id": message_id, "message_timestamp": 0})  # fmt: skip
    push_raw(broker, "heartbeats", body)
    drain(settings)
    assert stored(db) == 1
    assert nothing_held(broker)
    assert broker.client.hlen(f"{broker.namespace}:heartbeats.msgs") == 0


def test_dlq_list_retry_purge(db, settings, broker, capsys):
    poison = store_message("not a list of heartbeats")
    broker.enqueue(poison)
    drain(settings)
    assert cli.main(["dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert "store_heartbeats" in out and "PoisonMessage" in out and "1 dead letter(s)" in out

    assert cli.main(["dlq", "retry", "--all"]) == 0  # still poison: back in the dead-letter queue
    assert "retried 1" in capsys.readouterr().out
    drain(settings)
    assert cli.main(["dlq", "list", "--json"]) == 0
    [again] = json.loads(capsys.readouterr().out)
    assert again["message_id"] == poison.message_id and again["retries"] == 0

    assert cli.main(["dlq", "purge", "--all", "--queue", "heartbeats"]) == 0
    assert cli.main(["dlq", "retry", "no-such-id"]) == 2
    assert "no dead letter no-such-id" in capsys.readouterr().err
    assert cli.main(["dlq", "retry"]) == 2  # bad usage: which ones?


def test_retrying_a_partly_invalid_batch_stores_nothing_twice(db, settings, broker, capsys):
    broker.enqueue(store_message([heartbeat("ok-1"), {"user_id": "u"}, heartbeat("ok-2")]))
    drain(settings)
    assert stored(db) == 2
    assert cli.main(["dlq", "list", "--json"]) == 0
    [letter] = json.loads(capsys.readouterr().out)
    assert "item 1" in letter["error"]
    assert cli.main(["dlq", "retry", "--all"]) == 0
    drain(settings)
    assert stored(db) == 2
