"""Worker liveness that means it (worker.runtime.liveness): on Redis's clock, so a skewed host declares
nobody dead; a worker whose threads died, or that takes nothing while messages wait, is unhealthy
in `hbw health`, `hbw status` and the metrics, and one whose threads died exits so it is restarted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import with_actors
from tests.integration.test_status import heartbeats, run_cli
from worker.producer import enqueue_heartbeats
from worker.runtime.broker import HbwConsumer, make_broker
from worker.runtime.liveness import read_workers
from worker.runtime.messages import store_message
from worker.runtime.metrics import Metrics, QueueCollector
from worker.runtime.middleware import WorkerHeartbeat
from worker.runtime.runner import run_worker


class ThreadKiller(BaseException):
    """Not an Exception, so it escapes Dramatiq's handlers and ends the thread that raised it."""


def wait_until(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def start_worker(settings, queues: list[str]) -> tuple[threading.Thread, threading.Event, list[int]]:
    stop, codes = threading.Event(), []
    thread = threading.Thread(target=lambda: codes.append(run_worker(
        settings, queues=queues, threads=2, handle_signals=False, stop=stop, poll_interval=0.05)))  # fmt: skip
    thread.start()
    return thread, stop, codes


def worker_gauges(broker, settings) -> dict[str, float]:
    families = QueueCollector(broker, settings.worker_heartbeat_timeout_ms).collect()
    family = next(f for f in families if f.name == "hbw_workers")
    return {sample.labels["state"]: sample.value for sample in family.samples}


@pytest.mark.parametrize(
    ("worker_skew", "observer_skew"), [(0, 16), (-16, 0)], ids=["observer-ahead", "worker-behind"]
)
def test_a_skewed_host_clock_declares_no_live_worker_dead(
    db, broker, settings, monkeypatch, capsys, worker_skew, observer_skew
):
    """A worker holding a message beats; another process on a host whose clock differs by 16 s
    (more than the 15 s heartbeat timeout) runs Dramatiq's maintenance and `hbw status`."""
    real = time.time
    ns = settings.redis_namespace
    broker.enqueue(store_message(heartbeats(2)))
    monkeypatch.setattr(time, "time", lambda: real() + worker_skew)
    worker = with_actors(make_broker(settings))
    held = next(worker.consume("heartbeats", prefetch=1))
    worker.beat({"ok": True})

    monkeypatch.setattr(time, "time", lambda: real() + observer_skew)
    observer = make_broker(settings)
    observer.beat({"ok": True})
    observer.do_qsize("heartbeats")  # a command with maintenance due: requeues dead workers' messages

    acks = broker.client.smembers(f"{ns}:__acks__.{worker.broker_id}.heartbeats")
    assert acks == {held.options["redis_message_id"].encode()}, "a live worker's message was rescued early"
    assert broker.client.llen(f"{ns}:heartbeats") == 0
    code, out = run_cli(capsys, "status", "--json")
    report = json.loads(out)
    assert (report["workers_alive"], report["workers_dead"], report["workers_unhealthy"]) == (2, 0, [])
    assert code == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the kill itself
@pytest.mark.parametrize("victim", ["consumer", "worker"])
def test_a_worker_whose_threads_died_is_unhealthy_and_exits(
    db, broker, settings, monkeypatch, capsys, victim
):
    if victim == "consumer":
        consume = HbwConsumer.__next__

        def dying(self):
            if self.queue_name == "heartbeats":
                raise ThreadKiller
            return consume(self)

        monkeypatch.setattr(HbwConsumer, "__next__", dying)
        expected = "consumer thread died on heartbeats"
    else:

        def raising(self, broker, message, **outcome):  # twice: the second escapes the worker thread
            raise ThreadKiller

        monkeypatch.setattr(Metrics, "after_process_message", raising)
        enqueue_heartbeats(heartbeats(2), batch_size=10, broker=broker)
        expected = "1 of 2 worker threads died"

    thread, stop, codes = start_worker(settings, ["heartbeats"])
    try:
        thread.join(60)
        assert not thread.is_alive(), "a worker whose threads died kept running"
    finally:
        stop.set()
        thread.join(60)
    assert codes == [1], "it exits 1, so its supervisor starts a new one"

    # its last beat says why, until its beat goes stale (then it counts as dead)
    code, out = run_cli(capsys, "health", "--workers", "1")
    assert code == 1, out
    assert "FAIL  workers: 0 alive, 1 required; worker " in out and expected in out
    code, out = run_cli(capsys, "status", "--json")
    report = json.loads(out)
    assert code == 1 and report["workers_alive"] == 0
    assert [expected in w["reason"] for w in report["workers_unhealthy"]] == [True]
    assert worker_gauges(broker, settings) == {"alive": 0, "unhealthy": 1, "dead": 0}


def test_a_worker_taking_nothing_while_messages_wait_is_stuck(db, broker, settings, monkeypatch, capsys):
    beat = next(m for m in broker.middleware if isinstance(m, WorkerHeartbeat))
    monkeypatch.setattr(beat, "interval", 0.1)
    monkeypatch.setattr(beat, "stall_after", 1.0)
    wedged = threading.Event()
    wedged.set()
    consume = HbwConsumer.__next__

    def polling_without_fetching(self):  # the consumer thread lives, but nothing is fetched
        if wedged.is_set() and self.queue_name == "heartbeats":
            time.sleep(0.05)
            return None
        return consume(self)

    monkeypatch.setattr(HbwConsumer, "__next__", polling_without_fetching)
    enqueue_heartbeats(heartbeats(3), batch_size=10, broker=broker)
    timeout = settings.worker_heartbeat_timeout_ms
    thread, stop, codes = start_worker(settings, ["heartbeats"])
    try:
        wait_until(lambda: read_workers(broker, timeout).unhealthy)
        code, out = run_cli(capsys, "health", "--workers", "1")
        assert code == 1, out
        assert "FAIL  workers: 0 alive, 1 required; worker " in out
        assert (
            "stuck: no message taken or finished for" in out
            and "1 ready on heartbeats and 2 of 2 threads free" in out
        )
        code, out = run_cli(capsys, "status")
        assert code == 1 and "1 unhealthy" in out and "stuck" in out
        assert worker_gauges(broker, settings) == {"alive": 0, "unhealthy": 1, "dead": 0}

        wedged.clear()  # fetching again: it takes the message and is healthy once more
        wait_until(lambda: read_workers(broker, timeout).alive)
        assert read_workers(broker, timeout).unhealthy == []
        wait_until(lambda: broker.client.hlen(f"{settings.redis_namespace}:heartbeats.msgs") == 0)
    finally:
        stop.set()
        thread.join(60)
    assert codes == [0]
