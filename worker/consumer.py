"""The Redis consumer the workers use: Dramatiq's, with nothing taken on trust from the wire.

* **Ids from Redis.** Dramatiq acks a message under the ``redis_message_id`` written *inside* the
  message, so a producer that writes another id (or none) leaves it unacked for ever, or acks
  somebody else's message. Our fetch (``lua/fetch.lua``) returns the id Redis holds each message
  under, and that id is the one acked, nacked or handed back.
* **Admission.** Each message is checked before a worker thread sees it
  (:func:`worker.messages.admit`): Dramatiq's shape, a known actor of this queue, and only the
  options the worker takes from the wire. Anything else (undecodable bytes, wrong shapes, options
  such as ``throws`` that would make Dramatiq's worker thread raise) is dead-lettered here, at once,
  with the reason: no message can kill a thread or wedge a queue.
* **Recovery.** When Redis goes away, messages stay in this live worker's ack set that no thread of
  it will ever process, so nothing rescues them until the worker dies: those a consumer had
  prefetched, the delayed messages a delay-queue consumer held, and those a fetch took just before
  Redis died without its reply arriving (with ``appendfsync always`` the fetch survives the crash).
  The consumer that replaces it hands back every id in its ack set that this process did not hand
  to a worker thread (or, on a delay queue, every id), before it fetches anything.
"""

from __future__ import annotations

import contextlib
import time
from typing import ClassVar

import dramatiq
import redis
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from worker.deadletters import record_error
from worker.logs import describe_error, get_logger
from worker.messages import MalformedMessage, admit

log = get_logger("hbw.consumer")


class HbwConsumer(_RedisConsumer):
    """A consumer of one queue; ``message_cache`` holds fetched ``(redis id, data)`` pairs."""

    #: (worker id, queue) -> Redis ids this process's consumers handed to the worker threads and
    #: have not acked or nacked yet: running, or waiting for a thread. They belong in the ack set.
    _taken: ClassVar[dict[tuple[str, str], set[str]]] = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recovered = False

    @property
    def _taken_ids(self) -> set[str]:
        return self._taken.setdefault((self.broker.broker_id, self.queue_name), set())

    def close(self) -> None:
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

    def _recover(self) -> None:
        """Hand back what an earlier consumer of this queue, in this process, left behind."""
        key = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        held = {member.decode() for member in self.broker.client.smembers(key)}
        # On a delay queue, whatever this worker holds lived only in the previous consumer.
        lost = held if self.queue_name.endswith(".DQ") else held - self._taken_ids
        if lost:
            self.broker.do_requeue(self.queue_name, *sorted(lost))
        self._recovered = True

    def _reject(self, redis_id: str, reason: str) -> None:
        """Dead-letter a fetched message that no worker thread may see, with the reason."""
        self.broker.do_nack(self.queue_name, redis_id)
        record_error(self.broker, self.queue_name, redis_id, error=reason)
        log.error("message.dead_lettered", queue=self.queue_name, redis_message_id=redis_id, error=reason)

    def _admit(self, redis_id: str, data: bytes) -> dramatiq.MessageProxy | None:
        try:
            fields = dramatiq.get_encoder().decode(data)
            message = admit(fields, queue=self.queue_name, actors=self.broker.actors, redis_id=redis_id)
        except MalformedMessage as e:
            self._reject(redis_id, str(e))
            return None
        except Exception as e:  # undecodable (DecodeError), or anything the encoder raises
            self._reject(redis_id, f"undecodable message: {describe_error(getattr(e, 'error', e))}")
            return None
        return dramatiq.MessageProxy(message)

    def __next__(self):
        try:
            if not self._recovered:
                self._recover()
            while True:
                if self.message_cache:
                    redis_id, data = self.message_cache.pop(0)
                    proxy = self._admit(redis_id, data)
                    if proxy is None:
                        continue
                    self.misses = 0
                    self.queued_message_ids.add(proxy.message_id)
                    self._taken_ids.add(redis_id)
                    return proxy
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = self.broker.fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                if not self.message_cache:
                    # Nothing came: poll progressively less often, up to the idle timeout.
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
