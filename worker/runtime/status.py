"""What an operator needs at a glance: is the system keeping up? (`hbw status`, `hbw health`, and
the queue gauges of the metrics endpoint.)

Queue state is read straight from Dramatiq's Redis structures, per queue ``<ns>:<q>``:

* ready: the list ``<ns>:<q>`` (oldest first: Dramatiq pushes right and pops left);
* delayed: ``<ns>:<q>.DQ.msgs`` (retries waiting for their backoff, debounced derived jobs);
* in flight: ``<ns>:__acks__.<worker>.<q>`` of every worker (fetched, being processed or
  prefetched, not yet acked);
* dead-lettered: ``<ns>:<q>.XQ``;
* lag: age of the oldest ready message (counted from its eta when it was delayed), the time a
  new message waits before a worker takes it.

Workers are read by `worker.runtime.liveness` (alive and healthy, unhealthy with the reason, dead), on
Redis's clock; Redis's memory and whether it takes writes by `worker.runtime.redis_memory`. Throughput
comes from per-10-second counters the workers keep in Redis (:func:`count`), summed over the last
minute.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dramatiq
import orjson
import redis
import sqlalchemy as sa

from db import runs as db_runs
from db import stale as db_stale
from worker.runtime.liveness import UnhealthyWorker, read_workers
from worker.runtime.messages import QUEUES
from worker.runtime.redis_memory import check_writes

BUCKET_SECONDS = 10
BUCKET_TTL_SECONDS = 3600


@dataclass
class QueueState:
    name: str
    ready: int
    delayed: int
    in_flight: int
    dead_lettered: int
    lag_seconds: float
    processed_last_minute: int


@dataclass
class Status:
    queues: list[QueueState]
    workers_alive: int
    workers_dead: int
    heartbeats_stored_last_minute: int
    #: Beating but broken or stuck: {"worker_id", "host", "pid", "reason"}.
    workers_unhealthy: list[dict[str, Any]] = field(default_factory=list)
    #: {"used_bytes", "max_bytes", "policy", "writable", "problem", "usage"} (worker.runtime.redis_memory).
    redis: dict[str, Any] = field(default_factory=dict)
    pending_recomputes: int | None = None
    #: Recomputations dead-lettered for a reason of their own (`hbw dlq list` says why).
    failed_recomputes: int | None = None
    last_reprocess: dict[str, Any] | None = None
    checked_at: float = field(default_factory=time.time)

    @property
    def max_lag_seconds(self) -> float:
        return max((q.lag_seconds for q in self.queues), default=0.0)

    def problems(self, max_lag: float) -> list[str]:
        """Why `hbw status` exits 1: lag, Redis refusing writes, unhealthy workers."""
        found = []
        if self.max_lag_seconds > max_lag:
            found.append(f"lag {self.max_lag_seconds:,.0f}s exceeds {max_lag:,.0f}s")
        if self.redis.get("problem"):
            found.append(f"redis: {self.redis['problem']}")
        found += [UnhealthyWorker(**w).describe() for w in self.workers_unhealthy]
        return found

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_lag_seconds": self.max_lag_seconds}


# -- counters the workers keep ----------------------------------------------------------------


def _bucket_key(namespace: str, name: str, bucket: int) -> str:
    return f"{namespace}:hbw.stats:{name}:{bucket}"


def count(client: redis.Redis, namespace: str, amounts: dict[str, int], now: float | None = None) -> None:
    """Add to this 10-second bucket of each named counter (one round trip)."""
    bucket = int((now or time.time()) // BUCKET_SECONDS)
    pipe = client.pipeline(transaction=False)
    for name, amount in amounts.items():
        key = _bucket_key(namespace, name, bucket)
        pipe.incrby(key, amount)
        pipe.expire(key, BUCKET_TTL_SECONDS)
    pipe.execute()


def last_minute(
    client: redis.Redis, namespace: str, names: list[str], now: float | None = None
) -> dict[str, int]:
    """Each counter summed over the six complete 10-second buckets before now."""
    current = int((now or time.time()) // BUCKET_SECONDS)
    buckets = range(current - 6, current)
    keys = [_bucket_key(namespace, name, b) for name in names for b in buckets]
    values = client.mget(keys) if keys else []
    out = {}
    for i, name in enumerate(names):
        out[name] = sum(int(v) for v in values[i * 6 : i * 6 + 6] if v is not None)
    return out


# -- reading the queues -----------------------------------------------------------------------


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
    broker: dramatiq.Broker, worker_ids: list[str], queues=QUEUES, now: float | None = None
) -> list[QueueState]:
    ns, client = broker.namespace, broker.client
    now = now or time.time()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(f"{ns}:{queue}")
        pipe.hlen(f"{ns}:{queue}.DQ.msgs")
        pipe.zcard(f"{ns}:{queue}.XQ")
        pipe.lindex(f"{ns}:{queue}", 0)
        for worker in worker_ids:
            pipe.scard(f"{ns}:__acks__.{worker}.{queue}")
    replies = pipe.execute()
    oldest_ids = {}
    states = []
    per_queue = 4 + len(worker_ids)
    for i, queue in enumerate(queues):
        ready, delayed, dead, oldest, *acks = replies[i * per_queue : (i + 1) * per_queue]
        oldest_ids[queue] = oldest
        states.append(QueueState(queue, ready, delayed, sum(acks), dead, 0.0, 0))
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.hget(f"{ns}:{queue}.msgs", oldest_ids[queue]) if oldest_ids[queue] else pipe.echo("")
    for state, raw in zip(states, pipe.execute(), strict=True):
        state.lag_seconds = round(_message_age(raw or None, now * 1000), 3)
    processed = last_minute(client, ns, [f"processed.{q}" for q in queues], now)
    for state in states:
        state.processed_last_minute = processed[f"processed.{state.name}"]
    return states


def collect_status(
    broker: dramatiq.Broker, engine: sa.Engine | None, *, heartbeat_timeout_ms: int, queues=QUEUES
) -> Status:
    """Queues and workers from Redis; pending work and the last daily reprocess from PostgreSQL."""
    now = time.time()
    workers = read_workers(broker, heartbeat_timeout_ms)
    memory = check_writes(broker.client, broker.namespace)
    status = Status(
        queues=read_queues(broker, workers.beating, queues, now),
        workers_alive=len(workers.alive),
        workers_dead=workers.dead,
        workers_unhealthy=[asdict(w) for w in workers.unhealthy],
        redis={
            "used_bytes": memory.used_bytes,
            "max_bytes": memory.max_bytes,
            "policy": memory.policy,
            "writable": memory.writable,
            "problem": memory.problem,
            "usage": memory.usage,
        },
        heartbeats_stored_last_minute=last_minute(broker.client, broker.namespace, ["stored"], now)["stored"],
        checked_at=now,
    )
    if engine is not None:
        with engine.connect() as conn:
            status.pending_recomputes, status.failed_recomputes = db_stale.count_pending(conn)
            last = db_runs.select_last_run(conn, "reprocess")
        if last is not None:
            finished = last.finished_at
            status.last_reprocess = {
                "run_key": last.run_key,
                "status": last.status,
                "started_at": last.started_at.isoformat(),
                "finished_at": finished.isoformat() if finished else None,
                "seconds": round((finished - last.started_at).total_seconds(), 1) if finished else None,
                "user_days": last.user_days,
                "error": last.error,
            }
    return status
