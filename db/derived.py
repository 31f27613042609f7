"""Recomputing derived rows: day rows from raw heartbeats, then totals from day rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from db.queries import Key, json_param, key_params, query, window_params


def lock_users(conn: sa.Connection, lock_keys: Sequence[int]) -> None:
    """Take transaction-scoped advisory locks in the order given (callers sort them)."""
    if lock_keys:
        conn.execute(query("lock_users"), {"lock_keys": json_param(list(lock_keys))})


def recompute_days(conn: sa.Connection, keys: Sequence[Key], timeout_us: int) -> list[tuple[str, str, str]]:
    """Rebuild every day row of these user-days; returns the (job, user, name) that changed."""
    if not keys:
        return []
    params = {**window_params(keys), "timeout_us": timeout_us}
    return [tuple(r) for r in conn.execute(query("recompute_days"), params)]


def discard_deltas(conn: sa.Connection, keys: Sequence[Key]) -> None:
    """Drop the unapplied deltas of these user-days: a recomputation counts their heartbeats."""
    if keys:
        conn.execute(query("discard_deltas"), key_params(keys))


def select_total_names(conn: sa.Connection, job: str, user_ids: Sequence[str]) -> list[tuple[str, str]]:
    """Every (user, name) the job's totals of these users are or should be under."""
    params = {"job": job, "user_ids": list(user_ids)}
    return [tuple(r) for r in conn.execute(query("select_total_names"), params)]


def refresh_projects(conn: sa.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    if pairs:
        conn.execute(query("refresh_projects"), _pairs(pairs))


def refresh_project_languages(conn: sa.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    if pairs:
        conn.execute(query("refresh_project_languages"), _pairs(pairs))


def refresh_user_agents(conn: sa.Connection, rows: Sequence[Mapping[str, object]]) -> None:
    """Rows carry user_id, user_agent and the parsed columns of `user_agents`."""
    if rows:
        params = {name: [row[name] for row in rows] for name in rows[0]}
        params["user_ids"] = params.pop("user_id")
        params["user_agents"] = params.pop("user_agent")
        conn.execute(query("refresh_user_agents"), params)


def _pairs(pairs: Sequence[tuple[str, str]]) -> dict[str, list]:
    return {"user_ids": [p[0] for p in pairs], "raw_names": [p[1] for p in pairs]}
