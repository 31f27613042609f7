"""Graceful shutdown: SIGTERM lets in-flight messages finish within HBW_SHUTDOWN_TIMEOUT and
puts prefetched ones back at once; one that overruns is abandoned and redelivered later."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.faults.conftest import FAST, Blocker, children, stop
from worker.messages import store_message

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SHUTDOWN_TIMEOUT = float(FAST["HBW_SHUTDOWN_TIMEOUT"])


def held_by_anyone(broker, queue: str) -> int:
    return sum(
        broker.client.scard(key) for key in broker.client.scan_iter(match=f"hbw-faults:__acks__.*.{queue}")
    )


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("overrun", [False, True], ids=["finishes-in-time", "overruns-the-timeout"])
def test_sigterm_with_a_message_in_flight(faults, overrun):
    users = [f"user-{i}" for i in range(6)]
    blocker = Blocker(faults.engine, users[0])
    rest = None
    worker = faults.workers(
        "--processes", "1", "--threads", "1", "--queues", "heartbeats", "projects", ready=1
    )
    try:
        for user in users:
            faults.broker.enqueue(store_message([{"user_id": user, "entity": "e", "time": time.time() - 60,
                                                  "project": "p"}]))  # fmt: skip
        # the projects job of users[0] is running (blocked); the others wait prefetched behind it
        wait_until(lambda: held_by_anyone(faults.broker, "projects") >= 2)
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        if not overrun:
            time.sleep(1)
            blocker.release()  # the running message can finish now
        code = worker.wait(timeout=SHUTDOWN_TIMEOUT + 15)
        took = time.monotonic() - stopping
        assert code == 0
        assert took < SHUTDOWN_TIMEOUT + 5, took
        if not overrun:
            assert held_by_anyone(faults.broker, "projects") == 0, "prefetched messages went back at once"
        else:
            assert took >= SHUTDOWN_TIMEOUT - 0.5, "it waited for the running message first"
            blocker.release()
        # whatever did not finish is done by the next worker (after the rescue bound if abandoned)
        rest = faults.workers("--processes", "1", "--threads", "2", name="next", ready=1)
        faults.wait_drained(timeout=60)
        with faults.engine.connect() as conn:
            done = conn.execute(sa.text("SELECT count(*) FROM projects")).scalar_one()
        assert done == len(users)
    finally:
        blocker.release()
        stop(worker)
        if rest is not None:
            assert stop(rest) == 0


def test_sigterm_while_a_crashed_worker_awaits_its_restart(faults):
    """The supervisor restarts a dead worker after a second; a SIGTERM inside that second must
    still stop everything (no worker started after stopping began), cleanly."""
    supervisor = faults.workers("--processes", "2", "--threads", "1", ready=2)
    [first, second] = children(supervisor.pid)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.4)  # the supervisor has seen it die and waits to restart it
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=SHUTDOWN_TIMEOUT + 15) == 0
    assert children(supervisor.pid) == [] and not os.path.exists(f"/proc/{second}")
