"""A full Redis (maxmemory reached, noeviction) on a Redis of this test's own: health, status,
/readyz and the metrics say so, producers refuse cleanly, workers stay alive and lose nothing,
and once memory is raised processing resumes and every enqueued heartbeat is stored."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import dramatiq
import pytest

from jobs.keys import create_key
from tests import reference, streams
from tests.conftest import free_port, with_actors
from tests.integration.test_status import run_cli
from tests.tables import diff, snapshot
from tests.web_client import basic, post, serve
from worker.embedded import EmbeddedRedis
from worker.http.app import create_app
from worker.producer import EnqueueError, enqueue_heartbeats
from worker.runtime.broker import make_broker
from worker.runtime.liveness import read_workers
from worker.runtime.metrics import QueueCollector
from worker.settings import get_settings

NAMESPACE = "hbw-full"


@pytest.fixture
def own_redis(embedded_dir) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def commands_against(server: EmbeddedRedis, monkeypatch) -> Iterator[None]:
    """`hbw` commands run in this process use the test's own Redis."""
    with monkeypatch.context() as patch:
        patch.setenv("REDIS_URL", server.url)
        patch.setenv("HBW_REDIS_NAMESPACE", NAMESPACE)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


def fill(broker, items: list[dict]) -> list[dict]:
    """Lower maxmemory to a little above what Redis uses, then enqueue until it refuses.

    Right after a refusal Redis is at the limit, where it takes a small write again as soon as
    its own accounting dips under it; producers that keep sending keep it there. The test has no
    such producers, so it then lowers the limit a little more: over it, every write is refused.
    """
    client = broker.client
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 300_000)
    taken: list[dict] = []
    for start in range(0, len(items), 25):
        batch = items[start : start + 25]
        try:
            enqueue_heartbeats(batch, batch_size=25, broker=broker)
        except EnqueueError as e:
            assert e.result.enqueued == 0 and "RedisOutOfMemory" in str(e), str(e)
            client.config_set("maxmemory", client.info("memory")["used_memory"] - 100_000)
            return taken
        taken += batch
    raise AssertionError("the stream ran out before Redis was full")


def gauges(broker, settings) -> dict[str, float]:
    families = QueueCollector(broker, settings.worker_heartbeat_timeout_ms).collect()
    return {s.name: s.value for f in families for s in f.samples if not s.labels}


@pytest.mark.slow
def test_a_full_redis_is_reported_and_processing_resumes_when_memory_is_raised(
    db, settings, own_redis, monkeypatch, capsys, tmp_path
):
    own = settings.model_copy(update={"redis_url": own_redis.url, "redis_namespace": NAMESPACE})
    env = {
        **os.environ,
        "REDIS_URL": own_redis.url,
        "HBW_REDIS_NAMESPACE": NAMESPACE,
        "HBW_METRICS_PORT": "0",
    }
    broker = with_actors(make_broker(own))
    client = broker.client
    stream = streams.generate(seed=7, users=6, days=4)
    held_items, items = stream.valid[:3], stream.valid[3:]
    # a worker holding one message when Redis fills up: its ack must wait, not fail
    enqueue_heartbeats(held_items, batch_size=10, broker=broker)
    consumer = broker.consume("heartbeats", prefetch=1)
    held = next(consumer)
    assert held is not None
    taken = fill(broker, items)
    assert len(taken) > 100

    # an ack Redis refuses is a connection error, which Dramatiq retries until Redis takes it
    with pytest.raises(dramatiq.errors.BrokerConnectionError):
        consumer.ack(held)
    broker.beat({"ok": True})  # a worker's beat still lands: nobody is taken for dead meanwhile
    assert client.zscore(f"{NAMESPACE}:hbw.workers", broker.broker_id) is not None

    with commands_against(own_redis, monkeypatch):
        code, out = run_cli(capsys, "health")
        assert code == 1, out
        line = next(line for line in out.splitlines() if "redis" in line)
        assert line.startswith("FAIL  redis: out of memory (used_memory "), line
        assert (
            "policy noeviction): workers cannot fetch or ack; raise maxmemory (CONFIG SET maxmemory" in line
        )

        code, out = run_cli(capsys, "status", "--json")
        report = json.loads(out)
        assert code == 1 and report["redis"]["writable"] is False
        assert report["redis"]["problem"].startswith("out of memory") and report["redis"]["max_bytes"] > 0
        code, out = run_cli(capsys, "status")
        assert code == 1 and "redis: out of memory" in out

    (tmp_path / "one.jsonl").write_text(json.dumps({**items[-1], "entity": "refused.py"}) + "\n")
    enqueue = subprocess.run([sys.executable, "-m", "worker.cli", "enqueue", str(tmp_path / "one.jsonl")],
                             env={**env, "HBW_LOG_LEVEL": "ERROR"}, capture_output=True, text=True)  # fmt: skip
    assert enqueue.returncode == 1 and "enqueued: 0 heartbeats" in enqueue.stdout
    errors = enqueue.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("hbw: could not enqueue: Redis at"), errors
    assert "is out of memory (maxmemory reached) and refuses writes: raise maxmemory" in errors[0], errors

    assert gauges(broker, own)["hbw_redis_writable"] == 0
    assert gauges(broker, own)["hbw_redis_memory_max_bytes"] > 0
    with db.begin() as conn:
        key = create_key(conn, "alice")
    for url in serve(create_app(own, broker=broker, engine=db), own):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/readyz")
        assert refused.value.code == 503 and json.loads(refused.value.read()) == {
            "ok": False, "error": "redis out of memory"}  # fmt: skip
        status, answer, _ = post(f"{url}/api/v1/users/current/heartbeats", {"entity": "x.py", "time": 1.7e9},
                                 basic(key))  # fmt: skip
        assert status == 503 and "retry" in answer["error"]

    # a worker started while Redis is full waits; raising maxmemory lets it drain everything
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--burst", "-p", "1", "-t", "2"],
                              env=env, stdout=log, stderr=log)  # fmt: skip
    try:
        timeout, deadline = own.worker_heartbeat_timeout_ms, time.monotonic() + 60
        while set(read_workers(broker, timeout).beating) <= {broker.broker_id}:  # until its beat lands
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        client.config_set("maxmemory", 0)
        consumer.ack(held)  # the held message (never processed here) is acked at last
        assert worker.wait(180) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()

    assert diff(reference.compute(taken), snapshot(db)) == [], "every heartbeat Redis took is stored"
    assert client.zcard(f"{NAMESPACE}:heartbeats.XQ") == 0
    with commands_against(own_redis, monkeypatch):
        code, out = run_cli(capsys, "health")
    assert code == 0, out
    assert gauges(broker, own)["hbw_redis_writable"] == 1
