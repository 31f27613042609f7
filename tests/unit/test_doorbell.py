"""The doorbell (worker.runtime.doorbell): parked consumers wake when their queue gets a message, one
pipeline for all of them, with the maintenance their fetches used to run; the thread ends when
nobody is parked. On fakeredis, no services."""

from __future__ import annotations

import threading
import time

import fakeredis

from worker.runtime.doorbell import Doorbell


class FakeBroker:
    namespace = "t"

    def __init__(self) -> None:
        self.client = fakeredis.FakeRedis()
        self.maintained: list[str] = []

    def _maintenance_due(self, command: str, queue: str) -> int:
        return 1

    def do_maintain(self, queue: str) -> None:
        self.maintained.append(queue)


def doorbell_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "doorbell"]


def test_a_parked_consumer_wakes_when_its_queue_gets_a_message_and_not_before():
    broker = FakeBroker()
    bell = Doorbell(broker)
    assert bell.park("heartbeats", 0.3) is False, "nothing came: it waited its timeout"
    woke: list[float] = []

    def consumer() -> None:  # parks again after each timeout, as HbwConsumer does (1 s: worker_timeout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if bell.park("heartbeats", 1.0):
                woke.append(time.monotonic())
                return

    waiter = threading.Thread(target=consumer)
    waiter.start()
    time.sleep(0.2)
    sent = time.monotonic()
    broker.client.rpush("t:heartbeats", "id-1")  # another process enqueued
    waiter.join(10)
    assert woke and woke[0] - sent < 3, "woken by the next poll"
    assert "heartbeats" in broker.maintained, "maintenance rides on the doorbell's polls"


def test_a_local_enqueue_rings_at_once_and_the_thread_ends_with_the_last_consumer():
    bell = Doorbell(FakeBroker())
    bell.park("projects", 0.05)  # registers the queue, starts the thread
    started = time.monotonic()
    bell.ring("projects")
    assert bell.park("projects", 10) is True
    assert time.monotonic() - started < 1
    bell.leave("projects")
    deadline = time.monotonic() + 5
    while doorbell_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert doorbell_threads() == []
