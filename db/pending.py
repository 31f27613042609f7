"""Pending derived work: which (job, user, day) still needs recomputing, and at which generation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from db.queries import JobKey, Key, key_params, query


def select_unenqueued(conn: sa.Connection, keys: Sequence[Key]) -> list[JobKey]:
    if not keys:
        return []
    return [tuple(r) for r in conn.execute(query("select_unenqueued"), key_params(keys))]


def mark_enqueued(conn: sa.Connection, items: Sequence[JobKey]) -> None:
    if items:
        conn.execute(
            query("mark_enqueued"),
            {"jobs": [i[0] for i in items], "user_ids": [i[1] for i in items], "days": [i[2] for i in items]},
        )


def mark_pending(conn: sa.Connection, keys: Sequence[Key]) -> list[JobKey]:
    """Mark these user-days pending for every derived job; returns the rows that need a message."""
    if not keys:
        return []
    rows = conn.execute(query("mark_pending"), key_params(keys))
    return [(job, user_id, day) for job, user_id, day, needs_message in rows if needs_message]


def select_pending(
    conn: sa.Connection, job: str, keys: Sequence[Key], *, extra: int = 0
) -> list[tuple[str, dt.date, int, bool, bool]]:
    """(user_id, day, generation, pruned, full_refresh) of the pending ones among `keys`, plus up
    to `extra` other pending days of the same users."""
    if not keys:
        return []
    params = {"job": job, "extra": extra, **key_params(keys)}
    return [tuple(r) for r in conn.execute(query("select_pending"), params)]


def delete_pending(conn: sa.Connection, job: str, items: Sequence[tuple]) -> list[Key]:
    """Delete rows still at the generation read (items as from select_pending); returns the keys
    whose generation moved on."""
    if not items:
        return []
    params = {
        "job": job,
        "user_ids": [i[0] for i in items],
        "days": [i[1] for i in items],
        "generations": [i[2] for i in items],
    }
    return [tuple(r) for r in conn.execute(query("delete_pending"), params)]


def claim_orphans(
    conn: sa.Connection,
    *,
    jobs: Sequence[str],
    min_age: dt.timedelta,
    stale_after: dt.timedelta,
    limit: int = 10_000,
) -> list[JobKey]:
    params = {"jobs": list(jobs), "min_age": min_age, "stale_after": stale_after, "limit": limit}
    return [tuple(r) for r in conn.execute(query("claim_orphans"), params)]


def mark_failed(conn: sa.Connection, job: str, keys: Sequence[Key], error: str) -> None:
    """These user-days of `job` failed for a reason of their own: the sweeper leaves them alone."""
    if keys:
        conn.execute(query("mark_failed"), {"job": job, "error": error, **key_params(keys)})


def count_pending(conn: sa.Connection) -> tuple[int, int]:
    """(recomputations still to do, recomputations that failed)."""
    to_do, failed = conn.execute(query("count_pending")).one()
    return to_do, failed
