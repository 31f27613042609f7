"""Reprocess and backfill runs: their row, their lock, and the user-days they walk through."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from db.queries import Key, query


def try_lock_run(conn: sa.Connection, lock_key: int) -> bool:
    return conn.execute(query("try_lock_run"), {"lock_key": lock_key}).scalar_one()


def select_run(conn: sa.Connection, run_key: str) -> sa.Row | None:
    return conn.execute(query("select_run"), {"run_key": run_key}).one_or_none()


def start_run(conn: sa.Connection, *, fresh: bool, **fields) -> sa.Row:
    """fields: run_key, kind, since, until, user_id, host, pid."""
    return conn.execute(query("start_run"), {"fresh": fresh, **fields}).one()


def advance_run(conn: sa.Connection, run_key: str, cursor: Key, count: int) -> None:
    params = {"run_key": run_key, "cursor_user": cursor[0], "cursor_day": cursor[1], "count": count}
    conn.execute(query("advance_run"), params)


def finish_run(conn: sa.Connection, run_key: str, status: str, error: str | None = None) -> None:
    conn.execute(query("finish_run"), {"run_key": run_key, "status": status, "error": error})


def select_user_days_after(
    conn: sa.Connection,
    since: dt.date,
    until: dt.date,
    user_id: str | None,
    cursor: tuple[str | None, dt.date | None],
    limit: int,
) -> list[Key]:
    params = {
        "since": since,
        "until": until,
        "user_id": user_id,
        "cursor_user": cursor[0],
        "cursor_day": cursor[1],
        "limit": limit,
    }
    return [tuple(r) for r in conn.execute(query("select_user_days_after"), params)]


def count_user_days(conn: sa.Connection, since: dt.date, until: dt.date, user_id: str | None) -> int:
    params = {"since": since, "until": until, "user_id": user_id}
    return conn.execute(query("count_user_days"), params).scalar_one()


def select_day_range(conn: sa.Connection) -> tuple[dt.date | None, dt.date | None]:
    first, last = conn.execute(query("select_day_range")).one()
    return first, last


def count_stale_between(
    conn: sa.Connection, since: dt.date, until: dt.date, user_id: str | None
) -> tuple[int, int]:
    """(user-days still to recompute, user-days whose recomputation failed) in the range."""
    params = {"since": since, "until": until, "user_id": user_id}
    to_do, failed = conn.execute(query("count_stale_between"), params).one()
    return to_do, failed


def select_last_run(conn: sa.Connection, kind: str) -> sa.Row | None:
    return conn.execute(query("select_last_run"), {"kind": kind}).one_or_none()


def last_finished(conn: sa.Connection) -> list[tuple[str, str, float]]:
    """(kind, status, UNIX seconds) of the last finished run of each kind and status."""
    return [tuple(row) for row in conn.execute(query("select_last_finished"))]
