"""Raw heartbeat storage: a whole batch in, as JSON, with one set-based statement that also
writes the deltas it makes to the derived tables (db/sql/store.sql)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from db.queries import json_param, query


def insert_heartbeats(
    conn: sa.Connection, heartbeats: Sequence[Mapping[str, Any]], timeout_us: int
) -> list[tuple[str, dt.date, int]]:
    """Insert normalised heartbeats (one JSON parameter), with their deltas; returns (user_id, day,
    rows gained) per user-day. The caller holds the store locks of the batch's users."""
    params = {"batch": json_param(list(heartbeats)), "timeout_us": timeout_us}
    return [tuple(r) for r in conn.execute(query("insert_heartbeats"), params)]
