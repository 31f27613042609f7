"""The /metrics endpoints of `hbw worker` and `hbw serve`: the processes' counters
(worker.runtime.metrics, worker.http.metrics) and, for the workers, the queue gauges of one server
of the deployment (QueueCollector) and when reprocess and backfill runs last finished, which the
same elected server reads from PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import dramatiq
import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from db import runs as db_runs
from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime.metrics import QueueCollector

log = get_logger("hbw.metrics")


class RunCollector:
    """``hbw_run_last_finished_timestamp_seconds{kind,status}``: when the last reprocess and
    backfill run finished, by how (``done``: waited for; ``enqueued``: handed to the workers), for
    an alert on a daily reprocess that stopped succeeding. Read by the server reporting the
    queue gauges only."""

    def __init__(self, engine: Callable[[], sa.Engine], queues: QueueCollector) -> None:
        self.engine, self.queues = engine, queues

    def collect(self):
        try:
            if not self.queues.reporting():
                return
            with self.engine().connect() as conn:
                finished = db_runs.last_finished(conn)
        except Exception as e:
            log.warning("metrics.runs_unavailable", error=describe_error(e))
            return
        family = GaugeMetricFamily(
            "hbw_run_last_finished_timestamp_seconds",
            "When the last run of a kind (reprocess, backfill) finished, by status (done, enqueued).",
            labels=["kind", "status"],
        )
        for kind, status, at in finished:
            family.add_metric([kind, status], at)
        yield family


def queue_collectors(
    broker: dramatiq.Broker,
    heartbeat_timeout_ms: int,
    lease_s: float = 60,
    engine: Callable[[], sa.Engine] | None = None,
) -> list:
    """What `hbw worker`'s endpoint adds to the process's counters: the queue gauges, and when
    runs last finished (with an engine), both from the one server holding the lease."""
    queues = QueueCollector(broker, heartbeat_timeout_ms, lease_s)
    return [queues, *([RunCollector(engine, queues)] if engine else [])]


class MetricsServer:
    """A /metrics endpoint, served from a background thread until close(): the counters of this
    process, or of every process writing to PROMETHEUS_MULTIPROC_DIR, and `collectors`."""

    def __init__(self, port: int, host: str = "127.0.0.1", collectors: Sequence = ()) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)
        else:
            self.registry = REGISTRY
        self.collectors = list(collectors)
        for collector in self.collectors:
            self.registry.register(collector)
        try:
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError:
            self.close_collectors()
            raise
        self.port = self.server.server_port
        log.info("metrics.serving", host=host, port=self.port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.close_collectors()

    def close_collectors(self) -> None:
        for collector in self.collectors:
            self.registry.unregister(collector)
