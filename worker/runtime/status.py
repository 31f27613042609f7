"""What an operator needs at a glance: is the system keeping up? (`hbw status`, `hbw health`, and
the queue gauges of the metrics endpoint.)

Queue state is read straight from Dramatiq's Redis structures (worker.runtime.redis_keys: ready,
delayed, in flight, dead-lettered, and the lag, the age of the oldest ready message).

Workers are read by `worker.runtime.liveness` (alive and healthy, unhealthy with the reason, dead), on
Redis's clock; Redis's memory and whether it takes writes by `worker.runtime.redis_memory`. Throughput
comes from per-10-second counters the workers keep in Redis (redis_keys.count), summed over the
last minute.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dramatiq
import sqlalchemy as sa

from db import runs as db_runs
from db import stale as db_stale
from worker.runtime.liveness import UnhealthyWorker, read_workers
from worker.runtime.messages import QUEUES
from worker.runtime.redis_keys import QueueState, last_minute, read_queues
from worker.runtime.redis_memory import check_writes


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
