"""Worker liveness that means it, on Redis's clock.

**One clock.** Every liveness score is Redis's ``TIME``, read inside the script that writes it:
the workers' beats (``<ns>:__heartbeats__``, ``<ns>:hbw.workers``), Dramatiq's dispatch script (its
own heartbeat, and its maintenance, which requeues the messages of workers whose beat is older
than the heartbeat timeout) and the readers (`hbw status`, `hbw health`, metrics). A host whose
clock runs ahead or behind can neither declare the others dead nor look alive after its death.
(Dramatiq's message delays, ``options.eta``, stay on the hosts' clocks: a skewed host runs a
retry or a debounced job that much early or late, which changes no result.)

**Healthy, not just beating.** With each beat a worker process publishes its health in
``<ns>:hbw.worker_health``; readers count only healthy ones as alive and show the others with
the reason. A process is unhealthy when

* a consumer thread or a worker thread of Dramatiq died (an exception escaped its loop): the
  process then also stops and exits 1, so its supervisor restarts it (`worker.runtime.runner`), because
  Dramatiq never restarts the thread, and a dead worker thread may hold a message it will never
  ack;
* it is **stuck**: for longer than ``stall_after`` (4 x the heartbeat timeout, 60 s by default) it
  neither took nor finished a message while messages were ready on its queues and it had a free
  thread, as seen at every beat. Busy threads, empty queues or a recent message reset the clock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import dramatiq
import orjson

from worker.runtime import redis_keys
from worker.runtime.redis_keys import Keys

#: The dispatch script's time, from Redis (milliseconds; TIME answers seconds and microseconds).
_REDIS_CLOCK = b"""local now = redis.call("time")
local timestamp = now[1] * 1000 + math.floor(now[2] / 1000)
"""

#: KEYS: __heartbeats__, hbw.workers, hbw.worker_health; ARGV: worker id, health JSON.
#: Its first write, a ZREMRANGEBYSCORE, never needs memory; once a script has written, Redis lets
#: it finish, so a beat (which rewrites entries of fixed size) still lands when Redis is out of
#: memory: workers stay alive through it, and none is taken for dead when memory comes back.
BEAT_SCRIPT = """
local now = redis.call("time")
now = now[1] * 1000 + math.floor(now[2] / 1000)
local gone = redis.call("zrangebyscore", KEYS[2], "-inf", now - 3600000)
redis.call("zremrangebyscore", KEYS[2], "-inf", now - 3600000)
for _, worker in ipairs(gone) do
    redis.call("hdel", KEYS[3], worker)
end
redis.call("zadd", KEYS[1], now, ARGV[1])
redis.call("zadd", KEYS[2], now, ARGV[1])
redis.call("hset", KEYS[3], ARGV[1], ARGV[2])
return now
"""


def dispatch_script() -> bytes:
    """Dramatiq's dispatch script, with its timestamp read from Redis instead of the caller."""
    from dramatiq.brokers import redis as dramatiq_redis

    original = dramatiq_redis._scripts["dispatch"]
    line = b"local timestamp = ARGV[2]\n"
    if original.count(line) != 1:
        raise RuntimeError(
            "Dramatiq's dispatch.lua changed: worker.runtime.liveness cannot give it Redis's clock"
        )
    return original.replace(line, _REDIS_CLOCK)


# -- in the worker process --------------------------------------------------------------------


def _died(thread: threading.Thread) -> bool:
    """Dramatiq's threads clear `running` when told to stop; one that ended without it died."""
    return getattr(thread, "running", False) and not thread.is_alive()


def broken(worker: dramatiq.Worker) -> str | None:
    """Why this Worker can no longer do its work (threads of it that died), or None."""
    consumers = sorted(q for q, thread in worker.consumers.items() if _died(thread))
    threads = sum(_died(thread) for thread in worker.workers)
    problems = []
    if consumers:
        problems.append(f"consumer thread died on {', '.join(consumers)}")
    if threads:
        problems.append(f"{threads} of {len(worker.workers)} worker threads died")
    return "; ".join(problems) or None


class ProcessHealth:
    """The health of one Dramatiq Worker, fed by the WorkerHeartbeat middleware's hooks."""

    def __init__(self, worker: dramatiq.Worker, stall_after: float) -> None:
        self.worker, self.stall_after = worker, stall_after
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._progress = time.monotonic()  # local intervals only: never a wall clock
        self._ready_since: float | None = None

    def took(self, message_id: str) -> None:
        with self._lock:
            self._running.add(message_id)
            self._progress = time.monotonic()

    def finished(self, message_id: str | None = None) -> None:
        with self._lock:
            self._running.discard(message_id)
            self._progress = time.monotonic()

    def queues(self) -> list[str]:
        return sorted(q for q in self.worker.consumers if not q.endswith(".DQ"))

    def record(self, ready: int) -> dict:
        """What a beat publishes; `ready`: messages waiting on this process's queues just now."""
        now = time.monotonic()
        with self._lock:
            busy, progress = len(self._running), self._progress
        threads = len(self.worker.workers)
        alive = sum(thread.is_alive() for thread in self.worker.workers)
        free = max(0, alive - busy)
        self._ready_since = (self._ready_since or now) if ready and free else None
        reason = broken(self.worker)
        stalled = now - max(self._ready_since, progress) if self._ready_since is not None else 0.0
        if reason is None and stalled > self.stall_after:
            reason = (
                f"stuck: no message taken or finished for {stalled:.0f}s, with {ready} ready on "
                f"{', '.join(self.queues())} and {free} of {threads} threads free"
            )
        return {
            "ok": reason is None,
            "reason": reason,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "threads": threads,
            "threads_alive": alive,
            "busy": busy,
            "idle_s": round(now - progress, 1),
        }


def ready_messages(broker: dramatiq.Broker, queues: list[str]) -> int:
    return sum(redis_keys.ready_lengths(broker, queues))


# -- readers: hbw status, hbw health, metrics -------------------------------------------------


@dataclass(frozen=True)
class UnhealthyWorker:
    worker_id: str
    host: str | None
    pid: int | None
    reason: str

    def describe(self) -> str:
        where = f"{self.host}:{self.pid}" if self.host else self.worker_id
        return f"worker {where}: {self.reason}"


@dataclass
class Workers:
    #: Beating and healthy (or from a release that publishes no health).
    alive: list[str] = field(default_factory=list)
    #: Beating, but broken or stuck.
    unhealthy: list[UnhealthyWorker] = field(default_factory=list)
    #: Silent for the heartbeat timeout, their messages not yet rescued.
    dead: int = 0

    @property
    def beating(self) -> list[str]:
        """Every worker that may hold messages."""
        return self.alive + [w.worker_id for w in self.unhealthy]


def read_workers(broker: dramatiq.Broker, timeout_ms: int) -> Workers:
    """The workers by their last beat, judged on Redis's clock."""
    ns = broker.namespace
    pipe = broker.client.pipeline(transaction=False)
    pipe.time()
    keys = Keys(ns)
    pipe.zrange(keys.workers, 0, -1, withscores=True)
    pipe.zrange(keys.heartbeats, 0, -1)
    pipe.hgetall(keys.worker_health)
    (seconds, micros), registered, dramatiq_beats, health = pipe.execute()
    now_ms = seconds * 1000 + micros / 1000
    unrescued = set(dramatiq_beats)
    workers = Workers()
    for member, score in registered:
        if now_ms - score >= timeout_ms:
            workers.dead += member in unrescued
            continue
        record = _parse(health.get(member))
        if record.get("ok", True):
            workers.alive.append(member.decode())
        else:
            pid = record.get("pid")
            workers.unhealthy.append(
                UnhealthyWorker(
                    member.decode(),
                    record.get("host"),
                    pid if isinstance(pid, int) else None,
                    str(record.get("reason") or "unhealthy"),
                )
            )
    return workers


def _parse(raw: bytes | None) -> dict:
    try:
        record = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}
