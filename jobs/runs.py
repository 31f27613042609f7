"""Reprocess and backfill runs (docs/spec.md, section 5): the daily cron job and the one-time backfill.

A run marks the user-days of a range stale, a chunk at a time, and sends the workers their
recompute messages (queue ``recompute``): every derived row of those days is rebuilt from the raw
heartbeats, and every total of their users re-summed. Each
run has a key ("reprocess:2024-03-01", "backfill:first..last") and a row in `reprocess_runs`:

* while it works it holds an advisory lock on its key, in a transaction left open for the purpose
  (so it works behind PgBouncer in transaction mode): an overlapping run of the same key does not
  double the work, it reports the other run and exits 0 (or, with `wait`, waits for it); the lock
  dies with a crashed run's connection;
* a finished ("done") key is not run again unless forced;
* each chunk is marked stale and the run's cursor advanced in one short transaction, so an
  interrupted run resumes after the last chunk it handed over: it skips nothing it must do (stale
  rows outlive any crash) and redoes little;
* a backfill paces itself: it hands over the next chunk only when the workers have caught up, so it
  never floods Redis, and shows its progress.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from db import runs as db_runs
from db import stale as db_stale
from db.errors import describe_error
from db.queries import Key

log = structlog.stdlib.get_logger("hbw.runs")

#: Sends recompute messages for stale user-days and records them as sent; returns the messages
#: sent (worker.runtime.outbox.recompute_sender).
Send = Callable[[Sequence[Key]], int]


@dataclass(frozen=True)
class RunSpec:
    kind: str  # "reprocess" or "backfill"
    key: str
    since: dt.date
    until: dt.date
    user_id: str | None = None


def run_key(kind: str, since: object, until: object, user_id: str | None = None) -> str:
    span = f"{since}" if since == until else f"{since}..{until}"
    return f"{kind}:{span}" + (f":{user_id}" if user_id else "")


@dataclass
class RunOutcome:
    status: str  # done | enqueued | skipped | timeout | failed
    message: str
    user_days: int = 0
    messages: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.status in ("timeout", "failed") else 0


Progress = Callable[[int, int], None]


def _lock_key(run_key_: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"run\x1f{run_key_}".encode(), digest_size=8).digest(), "big", signed=True
    )


def execute_run(
    engine: sa.Engine,
    send: Send,
    spec: RunSpec,
    *,
    force: bool = False,
    wait: bool = False,
    timeout: float | None = None,
    chunk_size: int = 1000,
    pace: bool = False,
    progress: Progress | None = None,
    poll: float = 0.5,
) -> RunOutcome:
    deadline = time.monotonic() + timeout if timeout else None
    lock_key = _lock_key(spec.key)
    with engine.connect() as lock_conn:
        while not db_runs.try_lock_run(lock_conn, lock_key):
            lock_conn.rollback()
            if not wait:
                other = db_runs.select_run(lock_conn, spec.key)
                by = (
                    f" (started {other.started_at:%Y-%m-%d %H:%M:%S} on {other.host}, pid {other.pid})"
                    if other
                    else ""
                )
                return RunOutcome(
                    "skipped", f"another run of {spec.key} is in progress{by}; not doubling its work"
                )
            if _past(deadline):
                return RunOutcome("timeout", f"timed out waiting for another run of {spec.key}")
            time.sleep(poll)
        try:
            return _execute_locked(
                engine,
                send,
                spec,
                force,
                wait,
                deadline,
                chunk_size,
                pace,
                progress,
                poll,
            )
        finally:
            lock_conn.rollback()  # the lock's transaction: it wrote nothing


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _execute_locked(engine, send, spec, force, wait, deadline, chunk_size, pace, progress, poll):
    with engine.begin() as conn:
        previous = db_runs.select_run(conn, spec.key)
    if previous is not None and previous.status == "done" and not force:
        done_at = f"{previous.finished_at:%Y-%m-%d %H:%M:%S}"
        return RunOutcome("skipped", f"{spec.key} was already done at {done_at} (--force runs it again)")
    fresh = force or previous is None
    with engine.begin() as conn:
        run = db_runs.start_run(
            conn,
            fresh=fresh,
            run_key=spec.key,
            kind=spec.kind,
            since=spec.since,
            until=spec.until,
            user_id=spec.user_id,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
    if not fresh:
        log.info("run.resumed", run_key=spec.key, after=str(run.cursor_day), user_days=run.user_days)
    since, until, user_id = run.since, run.until, run.user_id

    def outstanding() -> int:
        """User-days still to do (failed ones are not: they wait for an operator)."""
        with engine.connect() as conn:
            to_do, _failed = db_runs.count_stale_between(conn, since, until, user_id)
        return to_do

    try:
        with engine.connect() as conn:
            total = db_runs.count_user_days(conn, since, until, user_id)
        handed, messages, cursor = run.user_days, 0, (run.cursor_user, run.cursor_day)
        while True:
            with engine.connect() as conn:
                keys = db_runs.select_user_days_after(conn, since, until, user_id, cursor, chunk_size)
            if not keys:
                break
            while pace and outstanding() > 2 * chunk_size:  # let the workers catch up first
                if progress:
                    progress(handed - outstanding(), total)
                if _past(deadline):
                    return RunOutcome("timeout", f"timed out handing over {spec.key}", handed, messages)
                time.sleep(poll)
            with engine.begin() as conn:
                items = db_stale.mark_stale(conn, keys)
                db_runs.advance_run(conn, spec.key, keys[-1], len(keys))
            messages += send(items)
            handed, cursor = handed + len(keys), keys[-1]
            if progress:
                progress(handed - outstanding(), total)
        with engine.begin() as conn:
            db_runs.finish_run(conn, spec.key, "enqueued")
        log.info("run.enqueued", run_key=spec.key, user_days=handed, messages=messages)
        if not wait:
            return RunOutcome(
                "enqueued", f"{spec.key}: {handed} user-day(s) handed to the workers", handed, messages
            )

        while (left := outstanding()) > 0:
            if progress:
                progress(handed - left, total)
            if _past(deadline):
                return RunOutcome(
                    "timeout",
                    f"timed out with {left} user-day(s) of {spec.key} still to do",
                    handed,
                    messages,
                )
            time.sleep(poll)
        if progress:
            progress(total, total)
        with engine.begin() as conn:
            _, failed = db_runs.count_stale_between(conn, since, until, user_id)
            if failed:
                error = f"{failed} recomputation(s) failed and were dead-lettered: `hbw dlq list` says why"
                db_runs.finish_run(conn, spec.key, "failed", error)
                return RunOutcome("failed", f"{spec.key}: {error}", handed, messages)
            db_runs.finish_run(conn, spec.key, "done")
        log.info("run.done", run_key=spec.key, user_days=handed)
        return RunOutcome("done", f"{spec.key}: done, {handed} user-day(s) recomputed", handed, messages)
    except Exception as e:
        with engine.begin() as conn:
            db_runs.finish_run(conn, spec.key, "failed", describe_error(e, limit=2000))
        raise
