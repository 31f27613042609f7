"""`hbw verify`: recompute, without writing anything, and report drift.

For every user-day in the range it compares the stored day rows with what the raw heartbeats
give, and for every user of the range it compares the stored totals with the sums of their day
rows. Each chunk is read in one read-only REPEATABLE READ snapshot, so it is consistent and never
holds a long transaction. User-days and users with recomputations still pending are skipped (and
counted): they differ only until the workers catch up. Pruned days are not checked against raw
heartbeats (there are none); their day rows still count in the totals check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from db import runs as db_runs
from db import verify as db_verify
from db.derived_jobs import DERIVED_JOBS
from jobs.heartbeat import chunked


@dataclass(frozen=True)
class Drift:
    table: str
    user_id: str
    day: dt.date | None
    name: str
    stored_seconds: float | None
    expected_seconds: float | None
    stored_count: int | None
    expected_count: int | None

    @property
    def seconds(self) -> float:
        return abs(float(self.stored_seconds or 0) - float(self.expected_seconds or 0))


@dataclass
class VerifyReport:
    user_days: int = 0
    pending_days: int = 0
    users: int = 0
    pending_users: int = 0
    drifts: list[Drift] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(d.seconds for d in self.drifts)


def verify_range(
    engine: sa.Engine,
    since: dt.date,
    until: dt.date,
    *,
    user_id: str | None,
    timeout_us: int,
    chunk_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport()
    snapshot = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    with engine.connect() as conn:
        total = db_runs.count_user_days(conn, since, until, user_id)
    users: set[str] = set()
    cursor: tuple[str | None, dt.date | None] = (None, None)
    while True:
        with engine.connect().execution_options(**snapshot) as conn, conn.begin():
            keys = db_runs.select_user_days_after(conn, since, until, user_id, cursor, chunk_size)
            if not keys:
                break
            pending = db_verify.select_pending_days(conn, keys)
            settled = [key for key in keys if key not in pending]
            for table in (job.day_table for job in DERIVED_JOBS):
                rows = db_verify.select_day_drift(conn, table, settled, timeout_us) if settled else []
                report.drifts.extend(Drift(table, *row) for row in rows)
        report.user_days += len(settled)
        report.pending_days += len(pending)
        users.update(user for user, _ in keys)
        cursor = keys[-1]
        if progress:
            progress(report.user_days + report.pending_days, total)

    for chunk in chunked(sorted(users), chunk_size):
        with engine.connect().execution_options(**snapshot) as conn, conn.begin():
            busy = db_verify.select_users_with_pending(conn, chunk)
            settled_users = [user for user in chunk if user not in busy]
            for table in (job.total_table for job in DERIVED_JOBS if job.total_table):
                rows = db_verify.select_total_drift(conn, table, settled_users) if settled_users else []
                report.drifts.extend(Drift(table, *row) for row in rows)
        report.users += len(settled_users)
        report.pending_users += len(busy)
    return report
