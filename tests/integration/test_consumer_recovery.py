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


def test_after_a_failover_an_ack_the_new_server_never_got_is_handed_back(db, broker):
    """A replica promoted before the ack reached it still holds the message in this worker's ack
    set: nothing would run it while the worker lives. The beat sees another server (its run_id)
    and the consumer hands the message back; the one still running stays."""
    acked = broker.enqueue(message(1))
    running = broker.enqueue(message(2)).options["redis_message_id"]
    consumer = broker.consume(QUEUE, prefetch=2, timeout=100)
    try:
        first, second = next(consumer), next(consumer)
        assert first.message_id == acked.message_id and second.options["redis_message_id"] == running
        data = broker.client.hget(f"{broker.namespace}:{QUEUE}.msgs", acked.options["redis_message_id"])
        consumer.ack(first)
        # the promoted replica's state: the ack never arrived
        broker.client.hset(f"{broker.namespace}:{QUEUE}.msgs", acked.options["redis_message_id"], data)
        broker.client.sadd(
            f"{broker.namespace}:__acks__.{broker.broker_id}.{QUEUE}", acked.options["redis_message_id"]
        )
        assert next(consumer) is None  # without noticing the failover: held by nobody, for ever
        broker._server = "the-run-id-of-the-server-that-is-gone"
        broker.beat()
        again = next(consumer)
        assert again.options["redis_message_id"] == acked.options["redis_message_id"]
        assert held(broker) == {running, acked.options["redis_message_id"]}
        consumer.ack(again)
        consumer.ack(second)
    finally:
        consumer.close()
    assert held(broker) == set()
