"""Raw heartbeat retention: `hbw prune --before D`.

Marks every user-day before D pruned, a chunk of user-days per short transaction, and deletes their
raw heartbeats; whole months of raw heartbeats before D go by dropping their partitions instead of
deleting rows. Their derived day rows stay, so totals do not change, and no recomputation ever
touches a pruned day again (it would find no raw heartbeats). Each chunk takes the locks a
recomputation takes (every job's, then the store lock, of its users), so a recomputation or a store
that is already running finishes before the raw rows go, and a store that comes after sees the day
pruned. Interrupted, it simply continues with the days not yet pruned, then drops the months.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from db import partitions as db_partitions
from db import retention as db_retention
from jobs.recompute import lock_users

#: The widest offset from UTC of a time zone: a heartbeat this long before D's UTC midnight is on
#: a day before D in every zone.
WIDEST_OFFSET = dt.timedelta(hours=14)


@dataclass(frozen=True)
class Pruned:
    days: int
    #: Raw heartbeats deleted (row by row, or with their month), and the months dropped whole.
    heartbeats: int
    months: list[str]


def droppable(partitions: list[db_partitions.Partition], before: dt.date) -> list[db_partitions.Partition]:
    """The partitions every row of which is on a day before `before`, in any time zone."""
    bound = dt.datetime.combine(before, dt.time(), dt.UTC) - WIDEST_OFFSET
    return [p for p in partitions if p[2] <= bound]


def prune_before(
    engine: sa.Engine,
    before: dt.date,
    *,
    chunk_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> Pruned:
    with engine.connect() as conn:
        total = db_retention.count_days_to_prune(conn, before)
        months = droppable(db_partitions.select_partitions(conn), before)
    # Rows before the last dropped month's end go with their partitions, not one by one.
    kept_from = max((upper for _, _, upper in months), default="-infinity")
    days = heartbeats = 0
    while True:
        with engine.begin() as conn:
            keys = db_retention.select_days_to_prune(conn, before, chunk_size)
            if not keys:
                break
            lock_users(conn, (user_id for user_id, _ in keys))
            marked, deleted = db_retention.prune_user_days(conn, keys, kept_from)
        days, heartbeats = days + marked, heartbeats + deleted
        if progress:
            progress(days, total)
    if months:
        with engine.begin() as conn:
            # No store or recomputation runs meanwhile: a day first stored since the loop above
            # (a late heartbeat) is marked pruned before its month goes.
            conn.execute(sa.text("LOCK TABLE heartbeats IN ACCESS EXCLUSIVE MODE"))
            late = db_retention.select_days_to_prune(conn, before, 1_000_000)
            if late:
                marked, deleted = db_retention.prune_user_days(conn, late, kept_from)
                days, heartbeats = days + marked, heartbeats + deleted
            for name, _, _ in months:
                heartbeats += db_partitions.drop_partition(conn, name)
    return Pruned(days, heartbeats, [name for name, _, _ in months])
