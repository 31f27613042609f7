"""Storing a batch of validated heartbeats, and finding the derived work it creates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from db import heartbeats as db_heartbeats
from db import pending as db_pending
from db.queries import JobKey, Key
from jobs.heartbeat import EPOCH, Heartbeat
from jobs.identity import dedup_hash


@dataclass(frozen=True, slots=True)
class StoreResult:
    received: int
    inserted: int
    #: Pending recomputations no message has been sent for yet: the caller sends them after commit.
    to_enqueue: list[JobKey] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def to_row(hb: Heartbeat, key: bytes) -> tuple:
    """A staging row, in db.heartbeats.COLUMNS order."""
    return (
        key, hb.user_id, EPOCH + dt.timedelta(microseconds=hb.time_us), hb.entity, hb.type, hb.category,
        hb.project, hb.branch, hb.language, hb.is_write, hb.lines, hb.lineno, hb.cursorpos,
        hb.project_root_count, hb.line_additions, hb.line_deletions, hb.dependencies, hb.user_agent,
        hb.machine,
    )  # fmt: skip


def store_heartbeats(conn: sa.Connection, heartbeats: Sequence[Heartbeat]) -> StoreResult:
    """Insert new heartbeats and mark their user-days pending, in the caller's transaction.

    Running it again with the same heartbeats inserts nothing and marks nothing, but still
    returns the pending rows that were never sent, so a retry after a crash between commit and
    send finishes the job.
    """
    rows: dict[bytes, tuple] = {}
    days: set[Key] = set()
    for hb in heartbeats:
        key = dedup_hash(hb)
        if key not in rows:
            row = to_row(hb, key)
            rows[key] = row
            days.add((hb.user_id, row[2].date()))
    if not rows:
        return StoreResult(received=len(heartbeats), inserted=0)

    db_heartbeats.stage_heartbeats(conn, rows.values())
    new_days = db_heartbeats.insert_staged(conn)
    db_heartbeats.insert_user_days(conn, [(user_id, day) for user_id, day, _ in new_days])
    return StoreResult(
        received=len(heartbeats),
        inserted=sum(n for _, _, n in new_days),
        to_enqueue=db_pending.select_unenqueued(conn, sorted(days)),
    )
