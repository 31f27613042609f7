"""A consumer that replaces one Redis cut off hands back what the worker holds but never saw.

When Redis dies after a fetch moved messages into this worker's ack set but before its reply
arrived (with `appendfsync always` the fetch survives the crash), the messages are held by a live
worker that does not know it has them: without recovery they wait for that worker to die.
"""

from __future__ import annotations

import dramatiq

QUEUE = "projects"


def message(n: int) -> dramatiq.Message:
    return dramatiq.Message(queue_name=QUEUE, actor_name="update_projects", args=(), kwargs={"n": n},
                            options={})  # fmt: skip


def held(broker) -> set[str]:
    key = f"{broker.namespace}:__acks__.{broker.broker_id}.{QUEUE}"
    return {member.decode() for member in broker.client.smembers(key)}


def queued(broker) -> list[str]:
    return [member.decode() for member in broker.client.lrange(f"{broker.namespace}:{QUEUE}", 0, -1)]


def test_the_replacing_consumer_hands_back_fetched_but_unseen_messages(db, broker):
    taken = broker.enqueue(message(1)).options["redis_message_id"]
    first = broker.consume(QUEUE, prefetch=1, timeout=100)
    proxy = next(first)  # handed to a worker thread, running: it belongs in the ack set
    assert proxy.options["redis_message_id"] == taken

    lost = {broker.enqueue(message(n)).options["redis_message_id"] for n in (2, 3)}
    broker.do_fetch(QUEUE, 2)  # a fetch whose reply Redis never sent: held, never seen
    assert held(broker) == {taken, *lost} and queued(broker) == []

    second = broker.consume(QUEUE, prefetch=1, timeout=100)  # what Dramatiq does after the error
    again = next(second)
    try:
        assert again.options["redis_message_id"] in lost  # back on the queue, and fetched again
        assert set(queued(broker)) == lost - {again.options["redis_message_id"]}
        assert held(broker) == {taken, again.options["redis_message_id"]}  # the running one stays
    finally:
        second.ack(again)
        second.ack(proxy)  # the running message finishes and is acked through the new consumer
        first.close()
        second.close()
    assert held(broker) == set()
