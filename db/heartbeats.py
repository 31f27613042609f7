"""Raw heartbeat storage: a whole batch in, as JSON, with one set-based statement that also
writes the deltas it makes to the derived tables (db/sql/store.sql)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from db.queries import query


def insert_heartbeats(
    conn: sa.Connection, batch_json: str, timeout_us: int
) -> list[tuple[str, dt.date, int]]:
    """Insert a JSON array of normalised heartbeats, with their deltas; returns (user_id, day,
    rows gained) per user-day. The caller holds the store locks of the batch's users."""
    params = {"batch": batch_json, "timeout_us": timeout_us}
    return [tuple(r) for r in conn.execute(query("insert_heartbeats"), params)]
