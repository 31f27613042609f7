"""Acceptance: 2 worker processes x several threads, ingest and reprocessing at the same time,
give exactly the reference result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from tests import reference, streams
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats
from worker.runtime.messages import QUEUES
from worker.runtime.redis_keys import queues_empty

pytestmark = pytest.mark.slow


def start_workers(log_path, *args: str) -> subprocess.Popen:
    # Logs go to a file: a pipe nobody reads fills up and blocks the workers.
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", *args],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def wait_drained(broker, engine, *, timeout: float = 180) -> None:
    """Until the queues are empty and nothing is pending, twice in a row."""
    deadline, calm = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pending = conn.execute(
                sa.text("SELECT (SELECT count(*) FROM stale_days) + (SELECT count(*) FROM derived_deltas)")
            ).scalar_one()
        calm = calm + 1 if queues_empty(broker, QUEUES) and pending == 0 else 0
        if calm >= 2:
            return
        time.sleep(0.5)
    raise AssertionError("the workers did not drain the queues in time")


def stop(proc: subprocess.Popen, log_path) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, log_path.read_text()


def live_order(rng: random.Random, items: list, round_: int) -> list:
    """As plugins send them: in time order with up to a minute of jitter, some sent twice."""

    def sent_at(item) -> float:
        at = item.get("time") if isinstance(item, dict) else None
        return (at if isinstance(at, int | float) and not isinstance(at, bool) else 0) + rng.uniform(0, 60)

    jittered = sorted(items, key=sent_at)
    return jittered + rng.sample(items, len(items) // 10) if round_ == 0 else jittered


@pytest.mark.parametrize("pace", ["backlog", "live"])
def test_two_processes_with_threads_and_concurrent_reprocess_equal_reference(
    db, settings, broker, tmp_path, pace
):
    """Backlog: shuffled in calls of up to 400. Live: in time order, in calls of 1-25 as ingest
    services make them, so the incremental deltas do the work; both with a reprocess racing."""
    stream = streams.generate(seed=21 if pace == "backlog" else 22, users=12, days=5)
    expected = reference.compute(stream.valid)
    rng = random.Random(5)
    log_path = tmp_path / "workers.log"
    workers = start_workers(log_path, "--processes", "2", "--threads", "4")
    errors: list[BaseException] = []

    def stored() -> int:
        with db.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar_one()

    def reprocess_repeatedly() -> None:
        try:
            deadline = time.monotonic() + 60
            while stored() < 1000 and time.monotonic() < deadline:  # reprocess while ingest runs
                time.sleep(0.05)
            for _ in range(3):
                time.sleep(random.uniform(0.1, 0.5))
                code = cli.main(
                    [
                        "reprocess",
                        "--since",
                        str(stream.first_day),
                        "--until",
                        str(stream.last_day),
                        "--force",
                    ]
                )
                assert code == 0
                overlapped.append(not queues_empty(broker, QUEUES))  # workers still busy
        except BaseException as e:  # surfaced below
            errors.append(e)

    overlapped: list[bool] = []
    reprocessor = threading.Thread(target=reprocess_repeatedly)
    try:
        reprocessor.start()
        for round_ in range(2):  # everything twice, in a different order
            items = list(stream.items)
            if pace == "live":
                items, high = live_order(rng, items, round_), 25
            else:
                random.Random(round_).shuffle(items)
                high = 400
            for batch in streams.random_batches(rng, items, high=high):
                enqueue_heartbeats(batch, batch_size=rng.randint(20, 300), broker=broker)
        reprocessor.join()
        assert not errors, errors
        assert any(overlapped), "no reprocess run overlapped live workers"
        wait_drained(broker, db)
    finally:
        code, stderr = stop(workers, log_path)
    assert code == 0, stderr[-3000:]
    assert '"worker.stopped"' in stderr
    assert diff(expected, snapshot(db)) == []
