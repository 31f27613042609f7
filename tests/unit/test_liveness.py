"""The rule for an unhealthy worker process (worker.runtime.liveness.ProcessHealth), on a fake Worker and a
fake monotonic clock: dead threads, and "stuck" (no progress for `stall_after` while messages are
ready and a thread is free) with every condition that must not count as stuck."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from worker.runtime import liveness


class FakeThread:
    def __init__(self, alive: bool = True, running: bool = True) -> None:
        self.alive, self.running = alive, running

    def is_alive(self) -> bool:
        return self.alive


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(liveness.time, "monotonic", lambda: now.t)
    return now


@pytest.fixture
def worker():
    return SimpleNamespace(
        consumers={"heartbeats": FakeThread(), "heartbeats.DQ": FakeThread()},
        workers=[FakeThread(), FakeThread()],
    )


def test_no_progress_while_messages_wait_and_a_thread_is_free_is_stuck(worker, clock):
    health = liveness.ProcessHealth(worker, stall_after=60)
    assert health.record(ready=5)["ok"], "the first sight of ready messages starts the clock"
    clock.t += 59
    assert health.record(ready=5)["ok"]
    clock.t += 2
    record = health.record(ready=5)
    assert not record["ok"]
    assert record["reason"] == (
        "stuck: no message taken or finished for 61s, with 5 ready on heartbeats and 2 of 2 threads free"
    )
    health.finished("m1")  # progress clears it
    assert health.record(ready=5)["ok"]


def test_not_stuck_when_busy_idle_or_progressing(worker, clock):
    health = liveness.ProcessHealth(worker, stall_after=60)
    clock.t += 3600  # idle for an hour with empty queues: fine
    assert health.record(ready=0)["ok"]
    clock.t += 1
    assert health.record(ready=3)["ok"], "messages that just arrived after a long idle time"

    health.took("m1")
    health.took("m2")  # every thread busy on long messages
    for _ in range(3):
        clock.t += 60
        assert health.record(ready=3)["ok"]
    health.finished("m1")
    for _ in range(3):
        clock.t += 30
        health.took("m3")
        health.finished("m3")
        assert health.record(ready=3)["ok"], "taking and finishing messages is progress"


def test_threads_that_died_break_the_process_but_stopped_ones_do_not(worker, clock):
    health = liveness.ProcessHealth(worker, stall_after=60)
    worker.consumers["heartbeats.DQ"].running, worker.consumers["heartbeats.DQ"].alive = False, False
    worker.workers[1].running, worker.workers[1].alive = False, False  # told to stop: not a death
    assert liveness.broken(worker) is None and health.record(ready=0)["ok"]

    worker.consumers["heartbeats"].alive = False
    worker.workers[0].alive = False
    assert liveness.broken(worker) == "consumer thread died on heartbeats; 1 of 2 worker threads died"
    record = health.record(ready=0)
    assert not record["ok"] and record["threads_alive"] == 0 and record["reason"] == liveness.broken(worker)
