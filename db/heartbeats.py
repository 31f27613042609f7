"""Raw heartbeat storage: a whole batch in, as JSON, with one set-based statement that also
writes the deltas it makes to the derived tables (db/sql/store.sql)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from db.queries import WINDOW_MARGIN, json_param, query


def lock_store_users(conn: sa.Connection, lock_keys: Sequence[int]) -> None:
    """The store locks of a batch's users, taken in the order given (callers sort them)."""
    conn.execute(query("lock_store_users"), {"lock_keys": json_param(list(lock_keys))})


def insert_heartbeats(
    conn: sa.Connection, heartbeats: Sequence[Mapping[str, Any]], timeout_us: int
) -> list[tuple[str, dt.date, int]]:
    """Insert normalised heartbeats (one JSON parameter), with their deltas; returns (user_id, day,
    rows gained) per user-day. The caller holds the store locks of the batch's users."""
    times = [heartbeat["time"] for heartbeat in heartbeats]
    params = {
        "batch": json_param(list(heartbeats)),
        "timeout_us": timeout_us,
        "since": min(times) - WINDOW_MARGIN.total_seconds(),
        "until": max(times) + WINDOW_MARGIN.total_seconds(),
    }
    return [tuple(r) for r in conn.execute(query("insert_heartbeats"), params)]
