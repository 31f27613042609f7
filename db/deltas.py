"""The outbox of the live path (table derived_deltas): finding, applying and setting aside the
deltas the store wrote. See db/sql/deltas.sql."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from db.derived_jobs import JOBS
from db.queries import json_param, query


def select_delta_users(conn: sa.Connection, job: str, *, limit: int) -> dict[str, int]:
    """Users with deltas of `job` waiting, from the oldest `limit` rows: how many rows each."""
    rows = conn.execute(query("select_delta_users"), {"job": job, "limit": limit})
    return {user_id: n for user_id, n in rows}


def try_lock_users(conn: sa.Connection, users: Sequence[tuple[str, int]]) -> list[str]:
    """Of (user, advisory lock key) pairs, the users whose lock was free (now held to commit)."""
    if not users:
        return []
    params = {"users": json_param([{"user_id": u, "lock_key": k} for u, k in users])}
    return list(conn.execute(query("try_lock_users"), params).scalars())


def apply_deltas(conn: sa.Connection, job: str, user_ids: Sequence[str], *, failed: bool = False) -> int:
    """Apply (and delete) the deltas of `job` for these users; `failed` takes the ones set aside
    too. Returns the number of delta rows applied. Not for user_agents (no apply_statement: two
    halves, below)."""
    params = {"user_ids": json_param(list(user_ids)), "failed": failed}
    return conn.execute(query(JOBS[job].apply_statement), params).scalar_one()


def apply_user_agent_day_deltas(
    conn: sa.Connection, user_ids: Sequence[str], *, failed: bool = False
) -> list[dict[str, Any]]:
    """The day-row half for user_agents; returns a dict of user_id, user_agent, coding_us,
    heartbeat_count, first_at and last_at per user agent, for apply_user_agent_totals."""
    params = {"user_ids": json_param(list(user_ids)), "failed": failed}
    result = conn.execute(query("apply_user_agent_day_deltas"), params)
    names = list(result.keys())  # (once: Row._asdict() builds the keys again for every row)
    return [dict(zip(names, row, strict=True)) for row in result]


def apply_user_agent_totals(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows carry user_id, user_agent, coding_us, heartbeat_count, first_at, last_at and the
    parsed columns of `user_agents`."""
    if not rows:
        return
    conn.execute(query("apply_user_agent_totals"), {"rows": json_param(list(rows))})


def mark_failed(conn: sa.Connection, job: str, user_ids: Sequence[str], error: str) -> None:
    conn.execute(query("mark_deltas_failed"), {"job": job, "user_ids": list(user_ids), "error": error})


def select_backlog(conn: sa.Connection) -> dict[str, tuple[int, float | None, int]]:
    """job -> (deltas waiting, age in seconds of the oldest waiting, deltas failed)."""
    return {
        job: (waiting, oldest, failed)
        for job, waiting, oldest, failed in conn.execute(query("select_delta_backlog"))
    }
