"""Where everything lives in Redis, under the broker's namespace ``<ns>``, and the counters read
from it. Every key is spelled here; everything else asks for it by name.

Dramatiq's Redis broker, per queue ``<q>``:

* ready: the list ``<ns>:<q>`` of message ids (oldest first: Dramatiq pushes right and pops left);
* the messages themselves: the hash ``<ns>:<q>.msgs`` (kept until acked);
* delayed (retries waiting for their backoff, debounced derived jobs): the queue ``<q>.DQ``, with
  its messages in ``<ns>:<q>.DQ.msgs``;
* dead-lettered: the sorted set ``<ns>:<q>.XQ`` (by time of death) and the hash ``<ns>:<q>.XQ.msgs``;
* in flight: ``<ns>:__acks__.<worker>.<q>``, each worker's fetched, not yet acked messages;
* ``<ns>:__heartbeats__``: every broker that sent a command lately (producers too).

Ours (``hbw.*``): the workers only workers write (``hbw.workers``) and their health, the derived
jobs' wake keys, the per-10-second counters behind `hbw status` and the metrics, the write probe,
and `hbw serve`'s rate limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dramatiq
import orjson
import redis
from dramatiq.common import dq_name, q_name, xq_name

BUCKET_SECONDS = 10
BUCKET_TTL_SECONDS = 3600


class Keys:
    """Every key of one namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.heartbeats = f"{ns}:__heartbeats__"
        self.workers = f"{ns}:hbw.workers"
        self.worker_health = f"{ns}:hbw.worker_health"
        self.write_probe = f"{ns}:hbw.write_probe"
        #: Which metrics server reports the queue gauges (worker.runtime.metrics.QueueCollector).
        self.queue_reporter = f"{ns}:hbw.queue_reporter"

    def ready(self, queue: str) -> str:
        return f"{self.ns}:{queue}"

    def messages(self, queue: str) -> str:
        return f"{self.ns}:{queue}.msgs"

    def delayed_messages(self, queue: str) -> str:
        return f"{self.ns}:{dq_name(queue)}.msgs"

    def dead_letters(self, queue: str) -> str:
        """The sorted set of dead letters' ids (their messages: the same + ".msgs")."""
        return f"{self.ns}:{xq_name(q_name(queue))}"

    def acks(self, worker_id: str, queue: str) -> str:
        return f"{self.ns}:__acks__.{worker_id}.{queue}"

    def wake(self, job: str) -> str:
        return f"{self.ns}:hbw.wake.{job}"

    def stats(self, name: str, bucket: int) -> str:
        return f"{self.ns}:hbw.stats:{name}:{bucket}"

    def auth_failures(self, address: str) -> str:
        return f"{self.ns}:hbw.authfail:{address}"

    def rate(self, key_hash: bytes, window: int) -> str:
        return f"{self.ns}:hbw.rate:{key_hash[:8].hex()}:{window}"


# -- counters the workers keep ----------------------------------------------------------------


def count(client: redis.Redis, namespace: str, amounts: dict[str, int], now: float | None = None) -> None:
    """Add to this 10-second bucket of each named counter (one round trip)."""
    bucket = int((now or time.time()) // BUCKET_SECONDS)
    pipe = client.pipeline(transaction=False)
    for name, amount in amounts.items():
        key = Keys(namespace).stats(name, bucket)
        pipe.incrby(key, amount)
        pipe.expire(key, BUCKET_TTL_SECONDS)
    pipe.execute()


def last_minute(
    client: redis.Redis, namespace: str, names: list[str], now: float | None = None
) -> dict[str, int]:
    """Each counter summed over the six complete 10-second buckets before now."""
    current = int((now or time.time()) // BUCKET_SECONDS)
    buckets = range(current - 6, current)
    keys = [Keys(namespace).stats(name, b) for name in names for b in buckets]
    values = client.mget(keys) if keys else []
    out = {}
    for i, name in enumerate(names):
        out[name] = sum(int(v) for v in values[i * 6 : i * 6 + 6] if v is not None)
    return out


# -- reading the queues -----------------------------------------------------------------------


@dataclass
class QueueState:
    name: str
    ready: int
    delayed: int
    in_flight: int
    dead_lettered: int
    #: Age of the oldest ready message (from its eta when it was delayed): how long a new message
    #: waits before a worker takes it.
    lag_seconds: float
    processed_last_minute: int


def _message_age(raw: bytes | None, now_ms: float) -> float:
    if raw is None:
        return 0.0
    try:
        message = orjson.loads(raw)
        since = max(message.get("message_timestamp", now_ms), (message.get("options") or {}).get("eta", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return 0.0
    return max(0.0, (now_ms - since) / 1000)


def read_queues(
    broker: dramatiq.Broker, worker_ids: list[str], queues, now: float | None = None
) -> list[QueueState]:
    """Each queue's counts and lag, in two round trips (plus one for the counters)."""
    ns, keys, client = broker.namespace, Keys(broker.namespace), broker.client
    now = now or time.time()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(keys.ready(queue))
        pipe.hlen(keys.delayed_messages(queue))
        pipe.zcard(keys.dead_letters(queue))
        pipe.lindex(keys.ready(queue), 0)
        for worker in worker_ids:
            pipe.scard(keys.acks(worker, queue))
    replies = pipe.execute()
    oldest_ids = {}
    states = []
    per_queue = 4 + len(worker_ids)
    for i, queue in enumerate(queues):
        ready_, delayed, dead, oldest, *acked = replies[i * per_queue : (i + 1) * per_queue]
        oldest_ids[queue] = oldest
        states.append(QueueState(queue, ready_, delayed, sum(acked), dead, 0.0, 0))
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.hget(keys.messages(queue), oldest_ids[queue]) if oldest_ids[queue] else pipe.echo("")
    for state, raw in zip(states, pipe.execute(), strict=True):
        state.lag_seconds = round(_message_age(raw or None, now * 1000), 3)
    processed = last_minute(client, ns, [f"processed.{q}" for q in queues], now)
    for state in states:
        state.processed_last_minute = processed[f"processed.{state.name}"]
    return states


def queues_empty(broker: dramatiq.Broker, queues) -> bool:
    """True when these queues hold no message: ready, delayed, prefetched or in flight (Dramatiq
    keeps every message in ``<q>.msgs`` until it is acked)."""
    keys, pipe = Keys(broker.namespace), broker.client.pipeline(transaction=False)
    for queue in queues:
        pipe.hlen(keys.messages(queue))
        pipe.hlen(keys.delayed_messages(queue))
    return not any(pipe.execute())


def ready_lengths(broker: dramatiq.Broker, queues) -> list[int]:
    """How many messages wait on each queue (one round trip)."""
    keys, pipe = Keys(broker.namespace), broker.client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(keys.ready(queue))
    return pipe.execute()
