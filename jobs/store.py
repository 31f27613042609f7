"""Storing a batch of validated heartbeats, with what it changes in the derived tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from db import heartbeats as db_heartbeats
from jobs.locks import store_lock
from jobs.partitions import ensure_months, forget


@dataclass(frozen=True, slots=True)
class StoreResult:
    received: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


def store_heartbeats(
    conn: sa.Connection, heartbeats: Sequence[dict[str, Any]], *, timeout_us: int
) -> StoreResult:
    """Insert new heartbeats and their deltas (the derived jobs' outbox), in the caller's transaction.

    The users' store locks come first, in one global order: the deltas read each new heartbeat's
    stored neighbours, which another batch of the same user must not be changing meanwhile.
    Running it again with the same heartbeats inserts nothing and writes no delta.
    """
    if not heartbeats:
        return StoreResult(received=0, inserted=0)
    db_heartbeats.lock_store_users(
        conn, sorted(store_lock(user_id) for user_id in {h["user_id"] for h in heartbeats})
    )
    ensure_months(conn, heartbeats)
    try:
        days = db_heartbeats.insert_heartbeats(conn, heartbeats, timeout_us)
    except sa.exc.IntegrityError as e:
        if "no partition" in str(e.orig):  # made in a transaction that then rolled back
            forget(conn)
        raise
    return StoreResult(received=len(heartbeats), inserted=sum(n for _, _, n in days))
