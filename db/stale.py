"""User-days to recompute from the raw heartbeats (table stale_days), at which generation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from db.queries import Key, key_params, query


def mark_stale(conn: sa.Connection, keys: Sequence[Key]) -> list[Key]:
    """Ask for a recomputation of these user-days; returns those that need a message."""
    if not keys:
        return []
    rows = conn.execute(query("mark_stale"), key_params(keys))
    return [(user_id, day) for user_id, day, needs_message in rows if needs_message]


def mark_enqueued(conn: sa.Connection, keys: Sequence[Key]) -> None:
    if keys:
        conn.execute(query("mark_enqueued"), key_params(keys))


def select_stale(
    conn: sa.Connection, keys: Sequence[Key], *, extra: int = 0
) -> list[tuple[str, dt.date, int, bool, bool]]:
    """(user_id, day, generation, pruned, full_refresh) of the stale ones among `keys`, plus up to
    `extra` other stale days of the same users."""
    if not keys:
        return []
    return [tuple(r) for r in conn.execute(query("select_stale"), {"extra": extra, **key_params(keys)})]


def delete_stale(conn: sa.Connection, items: Sequence[tuple]) -> list[Key]:
    """Delete rows still at the generation read (items as from select_stale); returns the keys
    whose generation moved on."""
    if not items:
        return []
    params = {
        "user_ids": [i[0] for i in items],
        "days": [i[1] for i in items],
        "generations": [i[2] for i in items],
    }
    return [tuple(r) for r in conn.execute(query("delete_stale"), params)]


def mark_failed(conn: sa.Connection, keys: Sequence[Key], error: str) -> None:
    """These user-days failed for a reason of their own: the sweeper leaves them alone."""
    if keys:
        conn.execute(query("mark_stale_failed"), {"error": error, **key_params(keys)})


def claim_orphans(
    conn: sa.Connection, *, min_age: dt.timedelta, stale_after: dt.timedelta, limit: int = 10_000
) -> list[Key]:
    params = {"min_age": min_age, "stale_after": stale_after, "limit": limit}
    return [tuple(r) for r in conn.execute(query("claim_orphans"), params)]


def count_pending(conn: sa.Connection) -> tuple[int, int]:
    """(derived work still to do, derived work that failed): stale user-days and deltas."""
    to_do, failed = conn.execute(query("count_pending")).one()
    return to_do, failed
