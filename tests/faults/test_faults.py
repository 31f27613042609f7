"""Fault injection: kill workers, crash PostgreSQL and Redis, duplicate deliveries, fail and lose
acks, while a realistic stream is processed. Afterwards the queues drain, nothing is
dead-lettered, and the database equals the reference: no heartbeat is lost, none counted twice."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import sqlalchemy as sa

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


class FaultyDelivery:
    """In-process fault injection on the session broker: duplicate deliveries, acks that fail
    (Dramatiq retries them) and acks that are lost (the message stays held by this worker)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def install(self, monkeypatch, broker) -> None:
        import dramatiq.worker
        from dramatiq.errors import ConnectionClosed
        from dramatiq.middleware import Middleware

        from worker.broker import HbwConsumer, HbwRedisBroker

        rng = self.rng

        class FlakyAcks(HbwConsumer):
            def ack(self, message):
                roll = rng.random()
                if roll < 0.1:
                    TALLY["acks failed (then retried)"] += 1
                    raise ConnectionClosed(ConnectionError("injected"))
                if roll < 0.2:
                    TALLY["acks lost (message redelivered)"] += 1
                    self.queued_message_ids.discard(message.message_id)
                    return
                super().ack(message)

        class Duplicates(Middleware):
            def after_process_message(self, broker, message, *, result=None, exception=None):
                if exception is None and rng.random() < 0.1:
                    TALLY["duplicate deliveries injected"] += 1
                    broker.enqueue(message.copy())

        monkeypatch.setattr(HbwRedisBroker, "consumer_class", property(lambda self: FlakyAcks))
        monkeypatch.setattr(dramatiq.worker, "POST_PROCESS_MESSAGE_RETRY_DELAY_SECS", 0.05)
        duplicates = Duplicates()
        broker.add_middleware(duplicates)
        self.remove = lambda: broker.middleware.remove(duplicates)


def test_duplicate_deliveries_and_failed_or_lost_acks(
    db, settings, broker, server_urls, monkeypatch, tmp_path
):
    """Workers in this process get the faults; a second worker process rescues what lost acks left."""
    from tests import reference
    from tests.conftest import drain
    from tests.tables import diff, snapshot
    from worker.producer import enqueue_heartbeats
    from worker.runner import run_worker

    stream = streams.generate(seed=54, users=8, days=3, invalid_share=0.01)
    rng = random.Random(54)
    faulty = FaultyDelivery(rng)
    faulty.install(monkeypatch, broker)
    stop_event = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings,),
                              kwargs={"handle_signals": False, "stop": stop_event, "threads": 4})  # fmt: skip
    worker.start()
    for batch in streams.random_batches(rng, stream.items + stream.items[:500], high=300):
        enqueue_heartbeats(batch, batch_size=rng.randint(20, 200), broker=broker)
    time.sleep(3)
    stop_event.set()
    worker.join(60)
    faulty.remove()
    monkeypatch.undo()

    # This process's worker is gone with lost acks still held: a worker process of its own
    # (its own broker id, short heartbeat timeout) finds them orphaned and redelivers them.
    import subprocess
    import sys

    env = {**os.environ, "HBW_WORKER_HEARTBEAT_TIMEOUT_MS": "2000", "HBW_MAINTENANCE_INTERVAL_MS": "300"}
    rescuer = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--burst", "--processes", "1"],
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rescuer.returncode == 0, rescuer.stderr[-3000:]
    drain(settings)
    assert TALLY["duplicate deliveries injected"] > 0 and TALLY["acks lost (message redelivered)"] > 0
    expected = reference.compute(stream.valid)
    snap = snapshot(db)
    assert diff(expected, snap) == []
    TALLY["heartbeats lost"] += len(expected.heartbeats - snap["heartbeats"])
    TALLY["streams converged to the reference"] += 1
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar_one() == len(
            expected.heartbeats
        )
