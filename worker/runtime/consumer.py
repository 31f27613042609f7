"""The Redis consumer the workers use: Dramatiq's, with nothing taken on trust from the wire.

* **Ids from Redis.** Dramatiq acks a message under the ``redis_message_id`` written *inside* the
  message, so a producer that writes another id (or none) leaves it unacked for ever, or acks
  somebody else's message. Our fetch (``lua/fetch.lua``) returns the id Redis holds each message
  under, and that id is the one acked, nacked or handed back.
* **Admission.** Each message is checked before a worker thread sees it
  (:func:`worker.runtime.messages.admit`): Dramatiq's shape, a known actor of this queue, and only the
  options the worker takes from the wire. Anything else (undecodable bytes, wrong shapes, options
  such as ``throws`` that would make Dramatiq's worker thread raise) is dead-lettered here, at once,
  with the reason: no message can kill a thread or wedge a queue.
* **Batches.** The ``heartbeats`` queue is fetched one message at a time: the store actor takes
  the other ready store messages itself (:func:`take_ready`), stores them all in one transaction
  and only then acks each (:func:`settle`), so live traffic of small messages costs one
  transaction per batch instead of one per message.
* **Idle queues** are watched by the process's doorbell (:mod:`worker.runtime.doorbell`), one round trip
  for all of them, instead of each consumer polling its own.
* **Recovery.** When Redis goes away, messages stay in this live worker's ack set that no thread of
  it will ever process, so nothing rescues them until the worker dies: those a consumer had
  prefetched, the delayed messages a delay-queue consumer held, and those a fetch took just before
  Redis died without its reply arriving (with ``appendfsync always`` the fetch survives the crash),
  and those a batch took but could not settle. The consumer that replaces it (or, for a batch, the
  queue's consumer at its next poll) hands back every id in its ack set that this process did not
  hand to a worker thread (or, on a delay queue, every id), before it fetches anything.
"""

from __future__ import annotations

import contextlib
import time

import dramatiq
import redis
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime.deadletters import record_error
from worker.runtime.messages import HEARTBEATS_QUEUE, MalformedMessage, admit
from worker.runtime.redis_keys import Keys

log = get_logger("hbw.consumer")


#: (worker id, queue) -> Redis ids this process's consumers (and batches) handed to the worker
#: threads and have not acked or nacked yet: running, or waiting for a thread. They belong in the
#: ack set.
_TAKEN: dict[tuple[str, str], set[str]] = {}


#: (worker id, queue) pairs whose consumer must look for messages this process holds but no
#: thread has (set when a batch could not settle or hand back its messages: Redis was away).
_LOST: set[tuple[str, str]] = set()


#: (worker id, queue) pairs whose consumer must look again for messages its ack set holds but no
#: thread has, because Redis is another server now (a failover): worker.runtime.broker.HbwRedisBroker.beat.
_RECHECK: set[tuple[str, str]] = set()


def server_changed(broker) -> None:
    """Redis is not the server this process's ack sets were written to (a failover promoted a
    replica, or it restarted): writes it had not replicated are gone, acks among them, so ids this
    process acked can be back in its ack sets with no thread to run them, and no worker death to
    rescue them. Every consumer of the process looks at its ack set again before its next fetch."""
    for queue in (*broker.queues, *broker.delay_queues):
        _RECHECK.add((broker.broker_id, queue))
    log.warning("redis.server_changed", worker=broker.broker_id)


def _taken(broker, queue: str) -> set[str]:
    return _TAKEN.setdefault((broker.broker_id, queue), set())


def _let_go(broker, queue: str, ids: list[str]) -> None:
    """These taken messages could not be settled: the queue's consumer hands them back."""
    _taken(broker, queue).difference_update(ids)
    _LOST.add((broker.broker_id, queue))


def reject(broker, queue: str, redis_id: str, reason: str) -> None:
    """Dead-letter a fetched message, with the reason."""
    broker.do_nack(queue, redis_id)
    record_error(broker, queue, redis_id, error=reason)
    _taken(broker, queue).discard(redis_id)
    log.error("message.dead_lettered", queue=queue, redis_message_id=redis_id, error=reason)


def _admit(broker, queue: str, redis_id: str, data: bytes) -> dramatiq.Message | None:
    """The message a worker may run, or None after dead-lettering what no worker may run."""
    try:
        fields = dramatiq.get_encoder().decode(data)
        return admit(fields, queue=queue, actors=broker.actors, redis_id=redis_id)
    except MalformedMessage as e:
        reject(broker, queue, redis_id, str(e))
    except Exception as e:  # undecodable (DecodeError), or anything the encoder raises
        reject(broker, queue, redis_id, f"undecodable message: {describe_error(getattr(e, 'error', e))}")
    return None


def take_ready(broker, queue: str, count: int) -> list[dramatiq.Message]:
    """Up to `count` ready messages of `queue`, taken into this worker's ack set for a thread that is
    already running one (a batch); malformed ones are dead-lettered. The caller settles them."""
    taken = []
    try:
        fetched = broker.fetch(queue, count)
    except Exception:  # the fetch may have taken messages whose reply never came: look for them
        _LOST.add((broker.broker_id, queue))
        raise
    for redis_id, data in fetched:
        if (message := _admit(broker, queue, redis_id, data)) is not None:
            _taken(broker, queue).add(redis_id)
            taken.append(message)
    return taken


def settle(
    broker, queue: str, done: list[dramatiq.Message], failed: list[tuple[dramatiq.Message, str]]
) -> None:
    """After the batch's commit: ack what is done, dead-letter what failed (with the reason). If
    Redis fails meanwhile, what is not settled is no longer this process's to keep: a consumer that
    replaces the failed one hands it back (it runs again, which the store absorbs)."""
    ids = [m.options["redis_message_id"] for m in done] + [m.options["redis_message_id"] for m, _ in failed]
    try:
        broker.ack_many(queue, [m.options["redis_message_id"] for m in done])
        _taken(broker, queue).difference_update(m.options["redis_message_id"] for m in done)
        for message, reason in failed:
            reject(broker, queue, message.options["redis_message_id"], reason)
    except Exception:
        _let_go(broker, queue, ids)
        raise


def hand_back(broker, queue: str, messages: list[dramatiq.Message]) -> None:
    """The batch failed: its taken messages go back on their queue, to be run on their own."""
    ids = [message.options["redis_message_id"] for message in messages]
    try:
        if ids:
            broker.do_requeue(queue, *ids)
            _taken(broker, queue).difference_update(ids)
    except Exception as e:  # Redis away: the consumer hands them back once it is there again
        _let_go(broker, queue, ids)
        log.warning("batch.hand_back_deferred", queue=queue, messages=len(ids), error=describe_error(e))


#: The first wait after an empty poll, doubling after each: under live traffic a poll is mostly
#: empty, each costs a Lua script in Redis and ~50 us of the worker's Python, and a store lingers
#: for more messages anyway (HBW_STORE_LINGER_MS), so 20 ms (Dramatiq's 5 ms polled 4x as often).
FIRST_BACKOFF_MS = 20
#: Empty polls in a row (20 ms, 40 ms, ... up to the worker timeout: about 2.3 s in all when it is
#: 1 s) after which a consumer parks on the broker's doorbell (worker.runtime.doorbell).
PARK_AFTER_MISSES = 7


class HbwConsumer(_RedisConsumer):
    """A consumer of one queue; ``message_cache`` holds fetched ``(redis id, data)`` pairs."""

    def __init__(self, broker, queue_name, prefetch, timeout) -> None:
        if queue_name == HEARTBEATS_QUEUE:  # one at a time: the store actor batches the rest
            prefetch = 1
        super().__init__(broker, queue_name, prefetch, timeout)
        self._recovered = False
        self._parked = False

    @property
    def _taken_ids(self) -> set[str]:
        return _taken(self.broker, self.queue_name)

    def close(self) -> None:
        self.broker.doorbell.leave(self.queue_name)
        held = [redis_id for redis_id, _ in self.message_cache]
        self.message_cache = []
        if held:
            # With Redis gone their ids stay in the ack set, and the replacing consumer hands them back.
            with contextlib.suppress(redis.ConnectionError):
                self.broker.do_requeue(self.queue_name, *held)
        super().close()

    def ack(self, message) -> None:
        super().ack(message)
        self._taken_ids.discard(message.options["redis_message_id"])

    def nack(self, message) -> None:
        super().nack(message)
        self._taken_ids.discard(message.options["redis_message_id"])

    def _recover(self, replaced: bool = True) -> None:
        """Hand back what an earlier consumer (or a batch) of this queue, in this process, left
        behind (`replaced`), or, after a failover, what it acked on the server that is gone."""
        _LOST.discard((self.broker.broker_id, self.queue_name))  # (a batch failing from now on sets it again)
        _RECHECK.discard((self.broker.broker_id, self.queue_name))
        key = Keys(self.broker.namespace).acks(self.broker.broker_id, self.queue_name)
        held = {member.decode() for member in self.broker.client.smembers(key)}
        # On a delay queue, whatever this worker holds lived only in the previous consumer.
        lost = held if replaced and self.queue_name.endswith(".DQ") else held - self._taken_ids
        lost -= {redis_id for redis_id, _ in self.message_cache}  # (still to be handed out)
        if lost:
            self.broker.do_requeue(self.queue_name, *sorted(lost))
        self._recovered = True

    def __next__(self):
        try:
            if not self._recovered or (self.broker.broker_id, self.queue_name) in _LOST:
                self._recover()
            elif (self.broker.broker_id, self.queue_name) in _RECHECK:
                self._recover(replaced=False)
            while True:
                if self.message_cache:
                    redis_id, data = self.message_cache.pop(0)
                    message = _admit(self.broker, self.queue_name, redis_id, data)
                    if message is None:
                        continue
                    proxy = dramatiq.MessageProxy(message)
                    self.misses = 0
                    self.queued_message_ids.add(proxy.message_id)
                    self._taken_ids.add(redis_id)
                    return proxy
                if self._parked:  # the doorbell polls for us, with the process's other idle queues
                    if not self.broker.doorbell.park(self.queue_name, self.timeout / 1000):
                        return None
                    self._parked, self.misses = False, 0
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = self.broker.fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if not self.message_cache:
                    # Nothing came: poll progressively less often, then leave it to the doorbell.
                    self.misses, backoff_ms = compute_backoff(
                        self.misses, factor=FIRST_BACKOFF_MS, max_backoff=self.timeout
                    )
                    self._parked = self.misses >= PARK_AFTER_MISSES
                    if not self._parked:
                        time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
