"""The bound on rescuing a dead worker's messages (docs/reliability.md): a message a worker held
when it died is back on its queue within HBW_WORKER_HEARTBEAT_TIMEOUT_MS +
max(HBW_MAINTENANCE_INTERVAL_MS, 1 s), as long as some worker consumes that queue (maintenance
rides on that worker's polls, which an idle consumer makes at least once a second)."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.faults.conftest import FAST, TALLY, Blocker, stop
from worker.runtime.messages import store_message

pytestmark = [pytest.mark.faults, pytest.mark.slow]

HEARTBEAT_TIMEOUT = int(FAST["HBW_WORKER_HEARTBEAT_TIMEOUT_MS"]) / 1000
MAINTENANCE = int(FAST["HBW_MAINTENANCE_INTERVAL_MS"]) / 1000
POLL = 0.05
IDLE_POLL = 1.0  # Dramatiq's worker_timeout: an idle consumer polls Redis at least this often
BOUND = HEARTBEAT_TIMEOUT + max(MAINTENANCE, IDLE_POLL)


def held(broker, queue: str) -> dict[str, set[bytes]]:
    """worker id -> ids it holds fetched but unacked on `queue`."""
    prefix = f"{broker.namespace}:__acks__."
    found = {}
    for key in broker.client.scan_iter(match=f"{prefix}*.{queue}"):
        members = broker.client.smembers(key)
        if members:
            found[key.decode()[len(prefix) : -len(queue) - 1]] = members
    return found


def test_a_dead_workers_messages_are_rescued_within_the_bound(faults):
    user = "rescue-me"
    # Block the projects job for this user, so the message sits in the first worker, unacked.
    blocker = Blocker(faults.engine, user)
    first = faults.workers(
        "--processes", "1", "--threads", "2", "--queues", "heartbeats", "projects", name="first"
    )
    second = None
    try:
        faults.broker.enqueue(store_message([{"user_id": user, "entity": "e", "time": time.time() - 60,
                                              "project": "p"}]))  # fmt: skip
        deadline = time.monotonic() + 60
        while not (holders := held(faults.broker, "projects")):
            assert time.monotonic() < deadline, "the first worker never took the message"
            time.sleep(POLL)
        [victim] = holders

        # a second worker (on every queue): its maintenance is what rescues
        second = faults.workers("--processes", "1", "--threads", "2", name="second", ready=1)
        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        blocker.release()

        while victim in held(faults.broker, "projects"):
            assert time.monotonic() - killed_at < 4 * (HEARTBEAT_TIMEOUT + MAINTENANCE), "never rescued"
            time.sleep(POLL)
        rescued_after = time.monotonic() - killed_at
        TALLY["dead-worker rescues timed"] += 1
        print(f"rescued {rescued_after:.2f} s after the kill (bound {BOUND:.1f} s)")
        # it looked alive until its last beat (a poll, at most 1 s before the kill) plus one timeout;
        # then the next maintenance on a poll of the rescuer moves its messages back
        assert rescued_after <= BOUND + 0.25, rescued_after
        faults.wait_drained(timeout=60)
        with faults.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT heartbeat_count FROM projects WHERE user_id = :u"),
                                {"u": user}).scalar_one() == 1  # fmt: skip
    finally:
        blocker.release()
        stop(first)
        if second:
            assert stop(second) == 0
