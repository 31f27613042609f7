"""Rescuing derived work that no message carries.

A store commits its deltas and then wakes the derived jobs; reprocessing commits stale user-days
and then sends their recompute messages. If the process dies in between, or Redis loses the
messages (no persistence), the work would wait forever. Each worker process sweeps now and then,
for the work of the queues it consumes: deltas waiting longer than `min_age` wake their job again,
and stale days never sent for `min_age`, or sent longer than `stale_after` ago, get a new message.
Duplicates are harmless: an updater or a recomputation that finds nothing to do does nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Middleware

from db import deltas as db_deltas
from db import stale as db_stale
from worker.logs import get_logger
from worker.runtime.outbox import send_recomputes, wake

log = get_logger("hbw.sweeper")


class OrphanSweeper(Middleware):
    def __init__(
        self,
        engine: Callable[[], sa.Engine],
        broker: dramatiq.Broker,
        *,
        jobs: Sequence[str],
        recompute: bool,
        keys_per_message: int,
        interval: float = 30.0,
        min_age: dt.timedelta = dt.timedelta(minutes=1),
        stale_after: dt.timedelta = dt.timedelta(minutes=15),
    ) -> None:
        self.engine, self.broker = engine, broker
        self.jobs, self.recompute = list(jobs), recompute
        self.keys_per_message = keys_per_message
        self.interval, self.min_age, self.stale_after = interval, min_age, stale_after
        self._stop = threading.Event()

    def sweep(self, *, everything: bool = False) -> int:
        """Send messages for orphaned work; `everything` when no message can be in flight.
        Returns the messages sent."""
        zero = dt.timedelta(0)
        sent = 0
        with self.engine().begin() as conn:
            backlog = db_deltas.select_backlog(conn) if self.jobs else {}
            keys = (
                db_stale.claim_orphans(
                    conn,
                    min_age=zero if everything else self.min_age,
                    stale_after=zero if everything else self.stale_after,
                )
                if self.recompute
                else []
            )
        late = [
            job for job in self.jobs
            if backlog.get(job, (0, None, 0))[0]
            and (everything or (backlog[job][1] or 0) >= self.min_age.total_seconds())
        ]  # fmt: skip
        if late:
            sent += wake(self.broker, late, delay_ms=0, force=everything)
        if keys:
            sent += send_recomputes(
                self.engine(), keys, keys_per_message=self.keys_per_message, broker=self.broker
            )
        if sent:
            log.info("derived.swept", woken=late, stale_days=len(keys))
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a database or Redis outage: try again next round
                log.warning("derived.sweep_failed", exc_info=True)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._run, name="orphan-sweeper", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
