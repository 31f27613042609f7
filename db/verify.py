"""Drift between stored derived rows and what the raw heartbeats (or the day rows) say."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from db.queries import Key, key_params, query, window_params


def select_pending_days(conn: sa.Connection, keys: Sequence[Key]) -> set[Key]:
    return {tuple(r) for r in conn.execute(query("select_pending_days"), key_params(keys))}


def select_users_with_pending(conn: sa.Connection, user_ids: Sequence[str]) -> set[str]:
    return set(conn.execute(query("select_users_with_pending"), {"user_ids": list(user_ids)}).scalars())


def select_day_drift(conn: sa.Connection, table: str, keys: Sequence[Key], timeout_us: int) -> list[sa.Row]:
    return list(conn.execute(query(f"verify_{table}"), {**window_params(keys), "timeout_us": timeout_us}))


def select_total_drift(conn: sa.Connection, table: str, user_ids: Sequence[str]) -> list[sa.Row]:
    return list(conn.execute(query(f"verify_{table}"), {"user_ids": list(user_ids)}))
