"""Raw heartbeat retention: which user-days to prune, and pruning them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from db.queries import Key, key_params, query


def select_days_to_prune(conn: sa.Connection, before: dt.date, limit: int) -> list[Key]:
    return [tuple(r) for r in conn.execute(query("select_days_to_prune"), {"before": before, "limit": limit})]


def count_days_to_prune(conn: sa.Connection, before: dt.date) -> int:
    return conn.execute(query("count_days_to_prune"), {"before": before}).scalar_one()


def prune_user_days(
    conn: sa.Connection, keys: Sequence[Key], kept_from: dt.datetime | str
) -> tuple[int, int]:
    """(user-days marked pruned, raw heartbeats deleted: those from `kept_from` on)."""
    row = conn.execute(query("prune_user_days"), {**key_params(keys), "kept_from": kept_from}).one()
    return row.days, row.heartbeats
