"""One metrics server of a deployment reports the queue gauges (issue #19, item 6): Redis's load
from scrapes does not grow with hosts and processes."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from worker.runtime.broker import make_broker
from worker.runtime.metrics import QueueCollector
from worker.runtime.metrics_server import RunCollector
from worker.runtime.redis_keys import Keys


def scrape(collector: QueueCollector) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples
            if not sample.labels or ("queue_name" in sample.labels and sample.labels["queue_name"] == "heartbeats")}  # fmt: skip


def test_one_server_reports_the_queues_until_its_lease_lapses(db, settings, broker):
    hosts = [
        QueueCollector(make_broker(settings), settings.worker_heartbeat_timeout_ms, lease_s=30)
        for _ in range(3)
    ]
    first, *others = (scrape(host) for host in hosts)
    assert first["hbw_queue_reporter"] == 1 and "hbw_queue_ready" in first and first["hbw_redis_up"] == 1
    for other in others:
        assert other == {"hbw_queue_reporter": 0, "hbw_redis_up": 1}  # no queue read at all
    for _ in range(3):  # its own scrapes renew its lease
        assert scrape(hosts[0])["hbw_queue_reporter"] == 1
        assert scrape(hosts[1])["hbw_queue_reporter"] == 0
    ttl = broker.client.pttl(Keys(settings.redis_namespace).queue_reporter)
    assert 25_000 < ttl <= 30_000
    broker.client.delete(Keys(settings.redis_namespace).queue_reporter)  # its lease lapsed (it died)
    assert scrape(hosts[2])["hbw_queue_reporter"] == 1 and "hbw_queue_ready" in scrape(hosts[2])
    assert scrape(hosts[0])["hbw_queue_reporter"] == 0


def test_the_reporting_server_says_when_runs_last_finished(db, settings, broker):
    with db.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO reprocess_runs (run_key, kind, since, until, status, host, pid, finished_at) VALUES
            ('reprocess:2026-11-28', 'reprocess', '2026-11-28', '2026-11-28', 'done', 'h', 1, '2026-11-29 03:00Z'),
            ('reprocess:2026-11-29', 'reprocess', '2026-11-29', '2026-11-29', 'failed', 'h', 1, '2026-11-30 03:00Z'),
            ('backfill:all', 'backfill', '2026-01-01', '2026-11-29', 'enqueued', 'h', 1, '2026-11-20 12:00Z')"""))  # fmt: skip
    reporter, other = (
        QueueCollector(make_broker(settings), settings.worker_heartbeat_timeout_ms) for _ in range(2)
    )
    assert scrape(reporter)["hbw_queue_reporter"] == 1

    def finished(queues: QueueCollector) -> dict[tuple[str, str], float]:
        families = RunCollector(lambda: db, queues).collect()
        return {(s.labels["kind"], s.labels["status"]): s.value for f in families for s in f.samples}

    assert finished(reporter) == {  # the failed run is not a success
        ("reprocess", "done"): dt.datetime(2026, 11, 29, 3, tzinfo=dt.UTC).timestamp(),
        ("backfill", "enqueued"): dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC).timestamp(),
    }
    assert finished(other) == {}  # one server reads PostgreSQL for the deployment
