"""Reprocess and backfill runs: overlapping runs beside live ingest converge without doubling
work, finished runs are not redone, and an interrupted backfill resumes where it stopped."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from db import runs as db_runs
from jobs.runs import RunSpec, _lock_key, execute_run, run_key
from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats
from worker.runtime.outbox import recompute_sender
from worker.runtime.runner import run_worker

pytestmark = pytest.mark.slow


class LiveWorkers:
    """An in-process worker running until stopped (not burst), like a deployment's workers."""

    def __init__(self, settings) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run_worker,
            args=(settings,),
            kwargs={"handle_signals": False, "stop": self.stop, "threads": 4},
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def run_row(engine, key: str):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM reprocess_runs WHERE run_key = :k"), {"k": key}
        ).one_or_none()


def test_overlapping_runs_during_live_ingest_converge_and_do_not_double_the_work(db, settings, broker):
    stream = streams.generate(seed=31, users=8, days=4, invalid_share=0.0)
    spec = RunSpec("reprocess", run_key("reprocess", stream.first_day, stream.last_day),
                   stream.first_day, stream.last_day)  # fmt: skip
    outcomes, errors = [], []

    def reprocess() -> None:
        try:
            outcomes.append(
                execute_run(
                    db,
                    recompute_sender(db, broker, keys_per_message=50),
                    spec,
                    chunk_size=40,
                    wait=True,
                    timeout=120,
                )
            )
        except BaseException as e:  # surfaced below
            errors.append(e)

    rng = random.Random(3)
    with LiveWorkers(settings):
        batches = streams.random_batches(rng, stream.items, high=300)
        half = len(batches) // 2
        for batch in batches[:half]:
            enqueue_heartbeats(batch, batch_size=100, broker=broker)
        runners = [threading.Thread(target=reprocess) for _ in range(2)]
        for runner in runners:
            runner.start()
        for batch in batches[half:]:  # live ingest goes on while both runs overlap
            enqueue_heartbeats(batch, batch_size=100, broker=broker)
        for runner in runners:
            runner.join()
        assert not errors, errors
        drain(settings)  # (joins the live worker in draining what ingest left)

    assert sorted(o.status for o in outcomes) == ["done", "skipped"], [o.message for o in outcomes]
    assert "already done" in next(o for o in outcomes if o.status == "skipped").message
    done = next(o for o in outcomes if o.status == "done")
    assert done.user_days == run_row(db, spec.key).user_days
    assert diff(reference.compute(stream.valid), snapshot(db)) == []


def test_an_overlapping_run_without_wait_reports_the_other_and_exits_0(db, settings, broker):
    day = dt.date(2024, 1, 1)
    spec = RunSpec("reprocess", "reprocess:2024-01-01", day, day)
    with db.connect() as holder:  # the other run: its lock lasts as long as its transaction
        assert db_runs.try_lock_run(holder, _lock_key(spec.key))
        outcome = execute_run(db, recompute_sender(db, broker, keys_per_message=10), spec)
    assert (outcome.status, outcome.exit_code) == ("skipped", 0)
    assert "in progress" in outcome.message


def test_daily_run_twice_is_skipped_the_second_time_unless_forced(db, settings, broker, capsys):
    now = time.time()
    enqueue_heartbeats([{"user_id": "u", "entity": "e", "time": now - 86_400, "project": "p"}], batch_size=10,
                       broker=broker)  # fmt: skip
    drain(settings)
    with LiveWorkers(settings):
        assert cli.main(["reprocess", "--yesterday", "--wait", "--timeout", "60"]) == 0
        assert "done, 1 user-day(s) recomputed" in capsys.readouterr().out
        assert cli.main(["reprocess", "--yesterday", "--wait", "--timeout", "60"]) == 0
        assert "was already done" in capsys.readouterr().out
        assert cli.main(["reprocess", "--yesterday", "--wait", "--force", "--timeout", "60"]) == 0
        assert "done, 1 user-day(s) recomputed" in capsys.readouterr().out


def test_backfill_killed_mid_way_resumes_and_converges(db, settings, broker, tmp_path):
    stream = streams.generate(seed=41, users=10, days=6, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=500, broker=broker)
    drain(settings)
    with db.begin() as conn:  # forget the derived rows, so only the backfill can bring them back
        conn.execute(sa.text("TRUNCATE project_days, language_days, user_agent_days, projects, "
                             "project_languages, user_agents, stale_days, derived_deltas"))  # fmt: skip
        total = conn.execute(sa.text("SELECT count(*) FROM user_days")).scalar_one()
    assert total > 60

    # No workers: the backfill hands over a few chunks, then waits for workers to catch up. Kill it.
    env = {**os.environ, "HBW_RUN_CHUNK_SIZE": "10"}
    with open(tmp_path / "backfill.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "backfill"], env=env, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 60
    while (row := run_row(db, "backfill:first..today")) is None or row.user_days < 30:
        assert time.monotonic() < deadline, (tmp_path / "backfill.log").read_text()
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = run_row(db, "backfill:first..today")
    assert killed.status == "running" and 30 <= killed.user_days < total

    with LiveWorkers(settings):
        rerun = subprocess.run([sys.executable, "-m", "worker.cli", "backfill", "--timeout", "120"], env=env,
                               capture_output=True, text=True, timeout=180)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert '"run.resumed"' in rerun.stderr
    finished = run_row(db, "backfill:first..today")
    assert finished.status == "done"
    assert finished.user_days == total, "every user-day handed over exactly once across both runs"
    drain(settings)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []
