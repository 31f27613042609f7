"""Raw heartbeat retention: `hbw prune --before D`.

Deletes the raw heartbeats of every user-day before D, a chunk of user-days per short
transaction, and marks those days pruned. Their derived day rows stay, so totals do not change,
and no recomputation ever touches a pruned day again (it would find no raw heartbeats). Each
chunk takes the derived jobs' per-user locks first, so a recomputation that is already running
finishes before the raw rows go. Interrupted, it simply continues with the days not yet pruned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from db import derived as db_derived
from db import retention as db_retention
from jobs.recompute import JOBS, lock_key


def prune_before(
    engine: sa.Engine,
    before: dt.date,
    *,
    chunk_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Returns (user-days pruned, raw heartbeats deleted)."""
    with engine.connect() as conn:
        total = db_retention.count_days_to_prune(conn, before)
    days = heartbeats = 0
    while True:
        with engine.begin() as conn:
            keys = db_retention.select_days_to_prune(conn, before, chunk_size)
            if not keys:
                break
            users = {user_id for user_id, _ in keys}
            db_derived.lock_users(conn, sorted(lock_key(job, user_id) for job in JOBS for user_id in users))
            marked, deleted = db_retention.prune_user_days(conn, keys)
        days, heartbeats = days + marked, heartbeats + deleted
        if progress:
            progress(days, total)
    return days, heartbeats
