"""Operators' view: `hbw status` and `hbw health` against a known queue state, the Prometheus
endpoint (in-process and from `hbw worker` with two processes), and the per-message log line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from db.derived_jobs import DERIVED_JOBS
from tests.conftest import drain, free_port
from worker import cli
from worker.producer import enqueue_heartbeats
from worker.runtime import redis_keys
from worker.runtime.messages import QUEUES, store_message, update_message

NOW = time.time()


def heartbeats(n: int, user: str = "ops") -> list[dict]:
    return [{"user_id": user, "entity": f"f{i}.py", "time": NOW - 600 + i, "project": "p", "language": "Go"}
            for i in range(n)]  # fmt: skip


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_status_reports_a_known_queue_state(db, broker, settings, capsys):
    ns, client, now = broker.namespace, broker.client, time.time()
    # 3 ready store messages, the oldest 90 s old
    for age in (90, 30, 10):
        message = store_message(heartbeats(2)).copy(message_timestamp=int((now - age) * 1000))
        broker.enqueue(message)
    # 2 delayed derived jobs
    for _ in range(2):
        broker.enqueue(update_message("projects"), delay=60_000)
    # 1 dead letter on the languages queue
    client.zadd(f"{ns}:languages.XQ", {"dead-1": now * 1000})
    client.hset(f"{ns}:languages.XQ.msgs", "dead-1", b"{}")
    # a live worker holding 2 user_agents messages, a dead one, and producers (Dramatiq lists
    # them in __heartbeats__ too: this test's own enqueues above, and a stale one)
    beats = {"live-worker": now * 1000, "dead-worker": (now - 120) * 1000}
    client.zadd(f"{ns}:hbw.workers", beats)
    client.zadd(f"{ns}:__heartbeats__", {**beats, "old-producer": (now - 120) * 1000})
    client.sadd(f"{ns}:__acks__.live-worker.user_agents", "m1", "m2")
    # throughput counters: 40 store messages and 12,345 heartbeats 15 s ago, 7 messages 5 min ago
    redis_keys.count(client, ns, {"processed.heartbeats": 40, "stored": 12_345}, now=now - 15)
    redis_keys.count(client, ns, {"processed.heartbeats": 7}, now=now - 300)
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO stale_days (user_id, day) VALUES ('ops', :d)"), {"d": _today()})
        conn.execute(sa.text(
            "INSERT INTO reprocess_runs (run_key, kind, since, until, status, user_days, started_at, finished_at) "
            "VALUES ('reprocess:2026-11-01', 'reprocess', '2026-11-01', '2026-11-01', 'done', 42, "
            "now() - interval '65 seconds', now() - interval '5 seconds')"))  # fmt: skip

    code, out = run_cli(capsys, "status", "--json", "--max-lag", "60")
    report = json.loads(out)
    assert code == 1, "the oldest ready message (90 s) lags more than --max-lag 60"
    queues = {q["name"]: q for q in report["queues"]}
    assert list(queues) == list(QUEUES)
    assert set(queues["heartbeats"]) == {"name", "ready", "delayed", "in_flight", "dead_lettered", "lag_seconds",
                                         "processed_last_minute"}  # fmt: skip
    assert (queues["heartbeats"]["ready"], queues["heartbeats"]["processed_last_minute"]) == (3, 40)
    assert 89 <= queues["heartbeats"]["lag_seconds"] < 100
    assert queues["projects"]["delayed"] == 2 and queues["projects"]["ready"] == 0
    assert queues["projects"]["lag_seconds"] == 0
    assert queues["languages"]["dead_lettered"] == 1
    assert queues["user_agents"]["in_flight"] == 2
    assert (report["workers_alive"], report["workers_dead"]) == (1, 1)
    assert report["heartbeats_stored_last_minute"] == 12_345
    assert report["pending_recomputes"] == 1
    assert report["max_lag_seconds"] == queues["heartbeats"]["lag_seconds"]
    last = report["last_reprocess"]
    assert (last["run_key"], last["status"], last["user_days"]) == ("reprocess:2026-11-01", "done", 42)
    assert 59 <= last["seconds"] <= 61

    code, out = run_cli(capsys, "status", "--max-lag", "600")
    assert code == 0
    assert "heartbeats" in out and "1 alive" in out and "1 dead" in out and "reprocess:2026-11-01 done" in out


def _today():
    import datetime as dt

    return dt.datetime.fromtimestamp(NOW, dt.UTC).date()


def test_health(db, broker, settings, capsys):
    code, out = run_cli(capsys, "health")
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()] == ["ok", "ok", "ok"]
    code, out = run_cli(capsys, "health", "--workers", "1")
    assert code == 1 and "FAIL  workers: 0 alive, 1 required" in out


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_endpoint_counts_messages_heartbeats_and_queues(db, broker, settings):
    from worker.runtime.metrics_server import MetricsServer, queue_collectors

    server = MetricsServer(0, collectors=queue_collectors(broker, settings.worker_heartbeat_timeout_ms))
    try:
        before = scrape(server.port)
        items = heartbeats(30)
        enqueue_heartbeats(items + items[:5], batch_size=10, broker=broker)  # 5 duplicates
        bad = {"user_id": "ops", "entity": "x", "time": "yesterday"}
        broker.enqueue(store_message([items[0], bad]))  # stores nothing new, then dead-letters
        drain(settings)
        after = scrape(server.port)
    finally:
        server.close()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hbw_heartbeats_total", outcome="stored") == 30
    assert delta("hbw_heartbeats_total", outcome="duplicate") == 6
    assert delta("hbw_heartbeats_total", outcome="rejected") == 1
    store = {"queue_name": "heartbeats", "actor_name": "store_heartbeats"}
    ran = delta("dramatiq_messages_total", **store)  # the others were stored in their transactions
    assert ran >= 1 and ran + delta("hbw_batched_messages_total") == 5
    assert delta("dramatiq_message_rejects_total", **store) == 1
    assert delta("dramatiq_message_duration_milliseconds_count", **store) == ran
    for job in ("projects", "languages", "user_agents"):
        assert delta("hbw_derived_duration_seconds_count", derived_job=job) >= 1
    for job in ("projects", "languages"):  # (these heartbeats have no user agent)
        assert delta("hbw_updated_users_total", derived_job=job) >= 1
    assert value(after, "hbw_redis_up") == 1
    assert value(after, "hbw_queue_dead_lettered", queue_name="heartbeats") == 1
    assert value(after, "hbw_queue_ready", queue_name="heartbeats") == 0
    assert value(after, "hbw_queue_lag_seconds", queue_name="heartbeats") == 0


@pytest.mark.slow
def test_hbw_worker_with_two_processes_serves_their_summed_metrics(db, broker, settings, tmp_path):
    port = free_port()
    env = {**os.environ, "HBW_METRICS_PORT": str(port), "HBW_LOG_LEVEL": "WARNING"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    items = heartbeats(200, user=f"mp-{uuid.uuid4().hex[:6]}")
    enqueue_heartbeats(items, batch_size=10, broker=broker)  # 20 messages for two processes
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--processes", "2", "--threads", "2"],
                            env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        samples = {}
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            # (one process may store everything before the other has started and beaten)
            if (
                value(samples, "hbw_heartbeats_total", outcome="stored") == 200
                and value(samples, "hbw_workers", state="alive") == 2
            ):
                break
            time.sleep(0.3)
        assert value(samples, "hbw_heartbeats_total", outcome="stored") == 200
        ran = value(
            samples, "dramatiq_messages_total", queue_name="heartbeats", actor_name="store_heartbeats"
        )
        assert ran + value(samples, "hbw_batched_messages_total") == 20
        assert value(samples, "hbw_workers", state="alive") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_one_summary_line_per_message_with_counts_and_batch_id(db, broker, settings, log_events):
    result = enqueue_heartbeats(heartbeats(12), batch_size=100, broker=broker)
    drain(settings)
    lines = log_events()
    done = [line for line in lines if line["event"] == "message.done"]
    store = [line for line in done if line["actor"] == "store_heartbeats"]
    assert len(store) == 1
    assert {k: store[0][k] for k in ("received", "inserted", "duplicates", "rejected", "batch_id")} == {
        "received": 12, "inserted": 12, "duplicates": 0, "rejected": 0, "batch_id": result.batch_id}  # fmt: skip
    assert "duration_ms" in store[0] and "message_id" in store[0]
    derived = [line for line in done if line["actor"] != "store_heartbeats"]
    assert {line["job"] for line in derived} == {job.name for job in DERIVED_JOBS}
    assert all(line["batch_id"] == result.batch_id for line in derived), "derived jobs carry the batch id"
    assert not [line for line in lines if line["event"] in ("heartbeats.stored", "derived.recomputed")]
