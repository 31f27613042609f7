"""Raw heartbeat retention: `hbw prune --before D`.

Deletes the raw heartbeats of every user-day before D, a chunk of user-days per short
transaction, and marks those days pruned. Their derived day rows stay, so totals do not change,
and no recomputation ever touches a pruned day again (it would find no raw heartbeats). Each
chunk takes the locks a recomputation takes (every job's, then the store lock, of its users), so
a recomputation or a store that is already running finishes before the raw rows go, and a store
that comes after sees the day pruned. Interrupted, it simply continues with the days not yet
pruned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from db import retention as db_retention
from jobs.recompute import lock_users


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
            lock_users(conn, (user_id for user_id, _ in keys))
            marked, deleted = db_retention.prune_user_days(conn, keys)
        days, heartbeats = days + marked, heartbeats + deleted
        if progress:
            progress(days, total)
    return days, heartbeats
