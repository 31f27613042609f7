"""Storing a batch of validated heartbeats, and finding the derived work it creates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from db import heartbeats as db_heartbeats
from db.queries import JobKey


@dataclass(frozen=True, slots=True)
class StoreResult:
    received: int
    inserted: int
    #: Pending recomputations no message has been sent for yet: the caller sends them after commit.
    to_enqueue: list[JobKey] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def store_heartbeats(conn: sa.Connection, heartbeats: Sequence[dict[str, Any]]) -> StoreResult:
    """Insert new heartbeats and mark their user-days pending, in the caller's transaction.

    Running it again with the same heartbeats inserts nothing and marks nothing, but still
    returns the pending rows that were never sent, so a retry after a crash between commit and
    send finishes the job.
    """
    if not heartbeats:
        return StoreResult(received=0, inserted=0)
    days = db_heartbeats.insert_heartbeats(conn, orjson.dumps(heartbeats).decode())
    new_days = [(user_id, day) for user_id, day, inserted in days if inserted]
    to_enqueue = db_heartbeats.record_days(conn, [(user_id, day) for user_id, day, _ in days], new_days)
    return StoreResult(received=len(heartbeats), inserted=sum(n for _, _, n in days), to_enqueue=to_enqueue)
