"""Rescuing pending recomputations that no message carries.

A store commits its pending rows and then sends the derived-job messages. If the process dies
in between, or Redis loses the messages (no persistence), the rows would wait forever. Each
worker process sweeps now and then: rows never sent for `min_age`, or sent longer than
`stale_after` ago and still pending, get a new message. Duplicates are harmless: the job
coalesces them.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Middleware

from db import pending as db_pending
from worker.logs import get_logger
from worker.producer import send_recomputes

log = get_logger("hbw.sweeper")


class OrphanSweeper(Middleware):
    def __init__(
        self,
        engine: Callable[[], sa.Engine],
        *,
        jobs: Sequence[str],
        keys_per_message: int,
        interval: float = 30.0,
        min_age: dt.timedelta = dt.timedelta(minutes=1),
        stale_after: dt.timedelta = dt.timedelta(minutes=15),
    ) -> None:
        self.engine = engine
        self.jobs = list(jobs)
        self.keys_per_message = keys_per_message
        self.interval = interval
        self.min_age = min_age
        self.stale_after = stale_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, *, everything: bool = False) -> int:
        """Send messages for orphaned rows; `everything` when no message can be in flight."""
        if not self.jobs:
            return 0
        zero = dt.timedelta(0)
        with self.engine().begin() as conn:
            items = db_pending.claim_orphans(
                conn,
                jobs=self.jobs,
                min_age=zero if everything else self.min_age,
                stale_after=zero if everything else self.stale_after,
            )
        if items:
            send_recomputes(self.engine(), items, keys_per_message=self.keys_per_message)
            log.info("pending.swept", rows=len(items))
        return len(items)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a database or Redis outage: try again next round
                log.warning("pending.sweep_failed", exc_info=True)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._thread = threading.Thread(target=self._run, name="orphan-sweeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
