"""Fault injection: kill workers, crash PostgreSQL and Redis, duplicate deliveries, fail and lose
acks, while a realistic stream is processed. Afterwards the queues drain, nothing is
dead-lettered, and the database equals the reference: no heartbeat is lost, none counted twice."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest

from tests import streams
from tests.faults.conftest import TALLY, children, stop

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_workers_sigkilled_at_random_points_repeatedly(faults):
    stream = streams.generate(seed=51, users=10, days=4, invalid_share=0.01)
    rng = random.Random(51)
    supervisor = faults.workers("--processes", "2", "--threads", "3", ready=2)
    done, kills = threading.Event(), {"n": 0}

    def killer() -> None:
        while not done.wait(rng.uniform(0.3, 1.0)):
            victims = children(supervisor.pid)
            if victims:
                os.kill(rng.choice(victims), signal.SIGKILL)  # the supervisor starts a new one
                kills["n"] += 1

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        faults.deliver(stream.items, rng, pause=0.05)
        # the supervisor itself dies too: its workers notice, finish and exit; a new one takes over
        orphans = children(supervisor.pid)  # before: afterwards they belong to init
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor = faults.workers("--processes", "2", "--threads", "3", ready=2)
        TALLY["supervisors SIGKILLed"] += 1
        shuffled = list(stream.items)
        rng.shuffle(shuffled)
        faults.deliver(shuffled, rng, pause=0.05)
        time.sleep(2)
    finally:
        done.set()
        thread.join()
    TALLY["worker processes SIGKILLed"] += kills["n"]
    assert kills["n"] >= 5
    faults.wait_drained()
    assert stop(supervisor) == 0
    assert all(not os.path.exists(f"/proc/{pid}") for pid in orphans)
    faults.assert_converged(stream)


def test_postgres_crashes_mid_stream(faults):
    stream = streams.generate(seed=52, users=8, days=4, invalid_share=0.01)
    rng = random.Random(52)
    workers = faults.workers("--processes", "2", "--threads", "3", ready=2)
    items = stream.items + stream.items[: len(stream.items) // 2]
    thirds = [items[i::3] for i in range(3)]
    try:
        for part in thirds:
            faults.deliver(part, rng, pause=0.02)
            faults.postgres.stop("immediate")  # as if the machine lost power
            time.sleep(2)
            faults.postgres.start()
            TALLY["PostgreSQL crashes (stop -m immediate) survived"] += 1
        faults.wait_drained()
    finally:
        assert stop(workers) == 0
    faults.assert_converged(stream)


def test_redis_crashes_mid_stream(faults):
    stream = streams.generate(seed=53, users=8, days=4, invalid_share=0.01)
    rng = random.Random(53)
    workers = faults.workers("--processes", "2", "--threads", "3", ready=2)
    items = stream.items + stream.items[: len(stream.items) // 2]
    thirds = [items[i::3] for i in range(3)]
    try:
        for part in thirds:
            half = len(part) // 2
            faults.deliver(part[:half], rng, pause=0.02)
            os.kill(faults.redis.pid(), signal.SIGKILL)  # appendfsync always: nothing acknowledged is lost
            down_until = time.monotonic() + 2
            producer = threading.Thread(target=faults.deliver, args=(part[half:], rng))
            producer.start()  # the producer keeps trying while Redis is down
            time.sleep(max(0, down_until - time.monotonic()))
            faults.redis.start()
            producer.join()
            TALLY["Redis crashes (SIGKILL) survived"] += 1
        faults.wait_drained()
    finally:
        assert stop(workers) == 0
    faults.assert_converged(stream)


def test_duplicate_deliveries_and_failed_or_lost_acks(faults, tmp_path):
    """A worker process with delivery faults (tests/faults/faulty_worker.py) takes a stream; a plain
    worker then rescues what its lost acks left held, once the faulty one is found dead."""
    stream = streams.generate(seed=54, users=8, days=3, invalid_share=0.01)
    rng = random.Random(54)
    tally_file = tmp_path / "tally.json"
    faulty = faults.workers("-m", "tests.faults.faulty_worker", "54", str(tally_file), module=True, ready=1)
    try:
        faults.deliver(stream.items + stream.items[:500], rng)
        time.sleep(3)
    finally:
        assert stop(faulty) == 0
    injected = json.loads(tally_file.read_text())
    TALLY.update(injected)
    assert injected["duplicate deliveries injected"] > 0 and injected["acks lost (message redelivered)"] > 0
    rescuer = faults.workers("--processes", "1", "--threads", "2", name="rescuer", ready=1)
    try:
        faults.wait_drained()
    finally:
        assert stop(rescuer) == 0
    faults.assert_converged(stream)
