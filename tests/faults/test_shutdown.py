"""Graceful shutdown: SIGTERM lets in-flight messages finish within HBW_SHUTDOWN_TIMEOUT and
puts prefetched ones back at once; one that overruns is abandoned and redelivered later."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from tests.faults.conftest import FAST, Blocker, children, group, stop
from worker.runtime.messages import store_message, update_message

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SHUTDOWN_TIMEOUT = float(FAST["HBW_SHUTDOWN_TIMEOUT"])


def held_by_anyone(broker, queue: str) -> int:
    return sum(
        broker.client.scard(key) for key in broker.client.scan_iter(match=f"hbw-faults:__acks__.*.{queue}")
    )


def waits_for_a_lock(engine) -> bool:
    """Some worker's statement is blocked on an advisory lock (the one the Blocker holds)."""
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"
        )).scalar_one())  # fmt: skip


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
        # an update of users[0]'s projects (it waits for the lock the blocker holds), then others
        for user in users:
            faults.broker.enqueue(update_message("projects", [user]))
        # the projects job of users[0] is running (blocked); the others wait prefetched behind it
        wait_until(lambda: waits_for_a_lock(faults.engine) and held_by_anyone(faults.broker, "projects") >= 2)
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


def left_behind(supervisor) -> list[int]:
    """Processes of the supervisor's group still alive a moment after it exited (none, if it
    stopped everything it started)."""
    deadline = time.monotonic() + 5
    while group(supervisor.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return group(supervisor.pid)


def test_the_group_check_sees_a_stray_process():
    """What the shutdown tests rely on: a process left behind in the group is found."""
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & exit 0"], start_new_session=True)
    parent.wait()
    strays = left_behind(parent)
    try:
        assert len(strays) == 1
    finally:
        for pid in strays:
            os.kill(pid, signal.SIGKILL)


def test_sigterm_while_a_crashed_worker_awaits_its_restart(faults):
    """The supervisor restarts a dead worker after a second; a SIGTERM inside that second must
    still stop everything (no worker started after stopping began), cleanly."""
    supervisor = faults.workers("--processes", "2", "--threads", "1", ready=2)
    [first, _] = children(supervisor.pid)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.4)  # the supervisor has seen it die and waits to restart it
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=SHUTDOWN_TIMEOUT + 15) == 0
    assert left_behind(supervisor) == []


def started(proc) -> int:
    return proc.log.read_text(errors="replace").count('"worker.process_started"')


@pytest.mark.parametrize("restart", [False, True], ids=["after-start", "after-a-restart"])
def test_sigterm_moments_after_a_worker_process_starts_stops_cleanly(faults, restart):
    """A SIGTERM that lands while a worker process is still starting (importing, connecting) stops
    everything gracefully: exit 0, every time, and the stop is logged."""
    rng = random.Random(6)
    for attempt in range(4):
        supervisor = faults.workers("--processes", "2", "--threads", "1", name=f"early-{attempt}",
                                    ready=2 if restart else 0)  # fmt: skip
        if restart:
            os.kill(children(supervisor.pid)[0], signal.SIGKILL)
        wait_until(lambda: started(supervisor) == (3 if restart else 2))  # noqa: B023
        time.sleep(rng.uniform(0, 1.5))  # a new worker process takes ~1-2 s to start
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=SHUTDOWN_TIMEOUT + 15)
        log = supervisor.log.read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert '"worker.stopping"' in log and '"worker.all_stopped"' in log, log[-3000:]
        assert left_behind(supervisor) == []
