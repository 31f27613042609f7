"""Running the derived jobs in a test's own transaction: the live path (applying the deltas the
store wrote) and the full recomputation (marking days stale and recomputing them)."""

from __future__ import annotations

import sqlalchemy as sa

from db import stale as db_stale
from db.derived_jobs import JOBS
from jobs import deltas
from jobs.recompute import recompute


def apply_all(conn: sa.Connection) -> int:
    """Apply every waiting delta of every job; returns the delta rows applied."""
    applied = 0
    for job in JOBS:
        while (result := deltas.apply(conn, job)).users:
            applied += result.rows
    return applied


def recompute_all(conn: sa.Connection, timeout_us: int) -> None:
    """Mark every user-day stale and recompute it (and every total of its user) from the raw rows."""
    keys = [tuple(k) for k in conn.execute(sa.text("SELECT user_id, day FROM user_days ORDER BY 1, 2"))]
    db_stale.mark_stale(conn, keys)
    recompute(conn, keys, timeout_us=timeout_us)
