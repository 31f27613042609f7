"""One metrics server of a deployment reports the queue gauges (issue #19, item 6): Redis's load
from scrapes does not grow with hosts and processes."""

from __future__ import annotations

from worker.runtime.broker import make_broker
from worker.runtime.metrics import QueueCollector
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
