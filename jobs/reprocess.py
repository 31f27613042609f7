"""Reprocessing (SPEC section 5): recompute every derived row fed by some user-days.

It marks the user-days pending for all three derived jobs and lets the workers recompute them
exactly as they recompute fresh data, so a reprocess beside live workers, or two at once,
converges to the same rows: the jobs are idempotent and coalesce duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import sqlalchemy as sa

from db import pending as db_pending
from db.queries import JobKey
from jobs.heartbeat import chunked


def mark_range_pending(
    engine: sa.Engine, since: dt.date, until: dt.date, *, user_id: str | None = None, chunk_size: int = 1000
) -> Iterator[list[JobKey]]:
    """Mark every user-day with raw heartbeats in [since, until] pending, one short transaction
    per chunk; yields each chunk's pending rows (already recorded as sent) for the caller to send."""
    with engine.connect() as conn:
        keys = db_pending.select_user_days(conn, since, until, user_id)
    for chunk in chunked(keys, chunk_size):
        with engine.begin() as conn:
            items = db_pending.mark_pending(conn, chunk)
        yield items  # committed: a job that runs at once finds the rows pending


def pending_between(engine: sa.Engine, since: dt.date, until: dt.date, *, user_id: str | None = None) -> int:
    with engine.connect() as conn:
        return db_pending.count_pending_between(conn, since, until, user_id)
