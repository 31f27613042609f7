"""Prometheus metrics: Dramatiq's own (same names as dramatiq.middleware.prometheus, so its
dashboards work) and ours, served by `hbw worker` on HBW_METRICS_PORT (default 9191) of
HBW_METRICS_HOST (default 127.0.0.1: not on a public interface unless asked for).

Several worker processes write their counters to files in PROMETHEUS_MULTIPROC_DIR (the
prometheus_client multiprocess mode), which `hbw worker` sets before it starts them; the process
that serves the endpoint adds them up. Queue depth, lag and live workers are read from Redis at
scrape time (Dramatiq's middleware has none of them), so every replica reports the same queues.
"""

from __future__ import annotations

import collections
import threading
import time

import dramatiq
import redis
from dramatiq.middleware import Middleware
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime import redis_keys
from worker.runtime.liveness import read_workers
from worker.runtime.messages import HEARTBEATS_QUEUE, QUEUES, STORE_ACTOR
from worker.runtime.redis_memory import check_writes

log = get_logger("hbw.metrics")

_MS_BUCKETS = (
    5,
    10,
    25,
    50,
    75,
    100,
    250,
    500,
    750,
    1_000,
    2_500,
    5_000,
    7_500,
    10_000,
    30_000,
    60_000,
    600_000,
    float("inf"),
)
_LABELS = ["queue_name", "actor_name"]

MESSAGES = Counter("dramatiq_messages", "The number of messages processed.", _LABELS)
ERRORS = Counter("dramatiq_message_errors", "The number of messages that raised.", _LABELS)
RETRIES = Counter("dramatiq_message_retries", "The number of messages retried.", _LABELS)
REJECTS = Counter("dramatiq_message_rejects", "The number of messages dead-lettered.", _LABELS)
DURATION = Histogram(
    "dramatiq_message_duration_milliseconds",
    "The time spent processing messages.",
    _LABELS,
    buckets=_MS_BUCKETS,
)
HEARTBEATS = Counter(
    "hbw_heartbeats", "Heartbeats seen by the store, by outcome: stored, duplicate, rejected.", ["outcome"]
)
UPDATED = Counter("hbw_updated_users", "Users whose deltas a derived job applied.", ["derived_job"])
BATCHED = Counter(
    "hbw_batched_messages", "Store messages stored in another one's transaction (not in dramatiq_messages)."
)
RECOMPUTED = Counter("hbw_recomputed_user_days", "User-days recomputed from the raw heartbeats.")
DERIVED_SECONDS = Histogram(
    "hbw_derived_duration_seconds",
    "Time a derived message took (job: one of db.derived_jobs, or recompute), locks included.",
    ["derived_job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")),
)


class Metrics(Middleware):
    """Counts every message by outcome and duration, here and in Redis (for `hbw status`)."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        message.options["hbw_metrics_started"] = time.monotonic()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result=None, exception=None
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = message.options.pop("hbw_metrics_started", None)
        MESSAGES.labels(*labels).inc()
        if started is not None:
            DURATION.labels(*labels).observe((time.monotonic() - started) * 1000)
        if exception is not None:
            ERRORS.labels(*labels).inc()
            (REJECTS if message.failed else RETRIES).labels(*labels).inc()
        TALLY.add(broker, {f"processed.{message.queue_name}": 1})

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        message.options.pop("hbw_metrics_started", None)
        if message.failed:
            REJECTS.labels(message.queue_name, message.actor_name).inc()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        TALLY.start(broker)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        TALLY.stop(broker)


class Tally:
    """The counters `hbw status` reads (worker.runtime.status.count), added up in this process and written
    to Redis once a second: a round trip per message was a large share of a small message's cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()

    def add(self, broker: dramatiq.Broker, amounts: dict[str, int]) -> None:
        with self._lock:
            self._pending.update({name: n for name, n in amounts.items() if n})

    def flush(self, broker: dramatiq.Broker) -> None:
        with self._lock:
            amounts, self._pending = dict(self._pending), collections.Counter()
        client = getattr(broker, "client", None)
        if not amounts or client is None:
            return
        try:
            redis_keys.count(client, broker.namespace, amounts)
        except Exception as e:  # statistics must never fail anything; these are lost
            log.warning("metrics.count_failed", error=describe_error(e))

    def start(self, broker: dramatiq.Broker) -> None:
        self._stop = stop = threading.Event()
        threading.Thread(target=self._run, args=(broker, stop), name="status-tally", daemon=True).start()

    def _run(self, broker: dramatiq.Broker, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.flush(broker)

    def stop(self, broker: dramatiq.Broker) -> None:
        self._stop.set()
        self.flush(broker)


TALLY = Tally()


def record_store(
    broker: dramatiq.Broker,
    *,
    inserted: int,
    duplicates: int,
    rejected: int,
    messages: int = 0,
    dead_lettered: int = 0,
) -> None:
    """A store transaction's counts; `messages`: the store messages it took along beside its own,
    `dead_lettered` of them."""
    BATCHED.inc(messages)
    REJECTS.labels(HEARTBEATS_QUEUE, STORE_ACTOR).inc(dead_lettered)
    HEARTBEATS.labels("stored").inc(inserted)
    HEARTBEATS.labels("duplicate").inc(duplicates)
    HEARTBEATS.labels("rejected").inc(rejected)
    TALLY.add(broker, {"stored": inserted, "processed.heartbeats": messages})


def record_update(job: str, users: int, seconds: float) -> None:
    UPDATED.labels(job).inc(users)
    DERIVED_SECONDS.labels(job).observe(seconds)


def record_recompute(user_days: int, seconds: float) -> None:
    RECOMPUTED.inc(user_days)
    DERIVED_SECONDS.labels("recompute").observe(seconds)


class QueueCollector:
    """Queue depth, lag, dead letters, workers and Redis's memory, read from Redis at each scrape
    by one metrics server of all the deployment's: the one holding a lease in Redis, which each
    of its scrapes renews and any scrape takes once it has lapsed (a lease longer than the scrape
    interval keeps it in one place). The others report ``hbw_queue_reporter 0`` and no queue
    gauges, so Redis's load from scrapes does not grow with hosts (queries take ``max``)."""

    def __init__(self, broker: dramatiq.Broker, heartbeat_timeout_ms: int, lease_s: float = 60) -> None:
        self.broker, self.heartbeat_timeout_ms = broker, heartbeat_timeout_ms
        self.lease_ms, self.me = round(lease_s * 1000), f"{broker.broker_id}"
        self.lease_key = redis_keys.Keys(broker.namespace).queue_reporter

    def reporting(self) -> bool:
        """Whether this server reports now: it took the lapsed lease, or renewed its own; or Redis
        refused the write (out of memory, read-only), when every server reports rather than none."""
        client = self.broker.client
        try:
            if client.set(self.lease_key, self.me, nx=True, px=self.lease_ms):
                return True
            mine = client.get(self.lease_key) == self.me.encode()
            return mine and bool(client.pexpire(self.lease_key, self.lease_ms))
        except redis.ResponseError:
            return True

    def collect(self):
        up = GaugeMetricFamily("hbw_redis_up", "1 when Redis answered this scrape.")
        try:
            reporting = self.reporting()
            yield GaugeMetricFamily(
                "hbw_queue_reporter",
                "1 when this server reports the queue gauges (one does).",
                value=int(reporting),
            )
            if not reporting:
                up.add_metric([], 1)
                yield up
                return
            workers = read_workers(self.broker, self.heartbeat_timeout_ms)
            queues = redis_keys.read_queues(self.broker, workers.beating, QUEUES)
            memory = check_writes(self.broker.client, self.broker.namespace)
        except Exception as e:
            log.warning("metrics.redis_unavailable", error=describe_error(e))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, attribute, help_text in (
            ("hbw_queue_ready", "ready", "Messages waiting for a worker."),
            ("hbw_queue_delayed", "delayed", "Messages waiting for their eta (retries, debounced jobs)."),
            ("hbw_queue_in_flight", "in_flight", "Messages fetched by workers and not yet acked."),
            ("hbw_queue_dead_lettered", "dead_lettered", "Messages in the dead-letter queue."),
            ("hbw_queue_lag_seconds", "lag_seconds", "Age of the oldest ready message."),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["queue_name"])
            for queue in queues:
                family.add_metric([queue.name], getattr(queue, attribute))
            yield family
        states = GaugeMetricFamily(
            "hbw_workers",
            "Worker processes: alive and healthy, unhealthy (dead threads, stuck), dead.",
            labels=["state"],
        )
        states.add_metric(["alive"], len(workers.alive))
        states.add_metric(["unhealthy"], len(workers.unhealthy))
        states.add_metric(["dead"], workers.dead)
        yield states
        yield GaugeMetricFamily(
            "hbw_redis_writable",
            "1 when Redis took a probe write (0: out of memory or read-only).",
            value=int(memory.writable),
        )
        for name, value, help_text in (
            ("hbw_redis_memory_used_bytes", memory.used_bytes, "Redis's used_memory."),
            ("hbw_redis_memory_max_bytes", memory.max_bytes, "Redis's maxmemory (0: no limit)."),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
