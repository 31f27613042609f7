"""Vacuuming the outbox from the workers, because autovacuum cannot be relied on to.

Every delta a store writes is deleted by an updater seconds later, so under live traffic
derived_deltas holds a few thousand live rows and gains over a thousand dead ones a second.
Until they are vacuumed, inserts and scans wade through them: measured at 333 heartbeats/s,
writing a delta row cost 52 µs with 160k dead rows and 13 µs after a VACUUM, so the cost of a
heartbeat grew with the traffic of the last minutes instead of with its own work. Autovacuum visits
a database once per ``autovacuum_naptime`` (a minute) at best, and is sometimes off. Each worker
process that applies deltas therefore checks the outbox tables' dead rows every
HBW_OUTBOX_VACUUM_INTERVAL_S and vacuums a table past HBW_OUTBOX_VACUUM_DEAD_ROWS (SKIP_LOCKED: one
process does it, the others skip). A vacuum of the small outbox takes milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Middleware

from db import maintenance
from db.errors import describe_error
from worker.logs import get_logger

log = get_logger("hbw.vacuum")


class OutboxVacuum(Middleware):
    def __init__(self, engine: Callable[[], sa.Engine], *, interval: float, dead_rows: int) -> None:
        self.engine, self.interval, self.dead_rows = engine, interval, dead_rows
        self._stop = threading.Event()

    def run_once(self) -> list[str]:
        """Vacuum the outbox tables past the threshold; returns those vacuumed."""
        with self.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            due = [table for table, n in maintenance.dead_rows(conn).items() if n >= self.dead_rows]
            for table in due:
                maintenance.vacuum(conn, table)
        if due:
            log.debug("outbox.vacuumed", tables=due)
        return due

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as e:  # an outage: next round
                log.warning("outbox.vacuum_failed", error=describe_error(e))

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # (One run per instance: each worker run adds its own, as with the sweeper.)
        threading.Thread(target=self._run, name="outbox-vacuum", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
