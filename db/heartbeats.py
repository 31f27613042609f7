"""Raw heartbeat storage: a whole batch in, as JSON, with one set-based statement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from db.queries import JobKey, Key, query


def insert_heartbeats(conn: sa.Connection, batch_json: str) -> list[tuple[str, dt.date, int]]:
    """Insert a JSON array of normalised heartbeats; returns (user_id, day, rows gained) per user-day."""
    return [tuple(r) for r in conn.execute(query("insert_heartbeats"), {"batch": batch_json})]


def record_days(conn: sa.Connection, days: Sequence[Key], new_days: Sequence[Key]) -> list[JobKey]:
    """Record `new_days` in user_days; returns the unsent pending rows of `days`."""
    params = {
        "user_ids": [k[0] for k in days], "days": [k[1] for k in days],
        "new_user_ids": [k[0] for k in new_days], "new_days": [k[1] for k in new_days],
    }  # fmt: skip
    return [tuple(r) for r in conn.execute(query("record_days"), params)]
