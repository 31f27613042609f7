"""Users' own settings (db/sql/users.sql)."""

from __future__ import annotations

import sqlalchemy as sa

from db.queries import Key, query


def select_user_zone(conn: sa.Connection, user_id: str) -> str | None:
    return conn.execute(query("select_user_zone"), {"user_id": user_id}).scalar()


def is_known_zone(conn: sa.Connection, zone: str) -> bool:
    return conn.execute(query("is_known_zone"), {"zone": zone}).scalar_one()


def count_pruned_days(conn: sa.Connection, user_id: str) -> int:
    return conn.execute(query("count_pruned_days"), {"user_id": user_id}).scalar_one()


def upsert_user_zone(conn: sa.Connection, user_id: str, zone: str) -> None:
    conn.execute(query("upsert_user_zone"), {"user_id": user_id, "zone": zone})


def reday_user(conn: sa.Connection, user_id: str, zone: str) -> list[Key]:
    """Lay the user's history out in `zone`'s days, all stale; returns those user-days."""
    conn.execute(query("forget_user_days"), {"user_id": user_id})
    rows = conn.execute(query("lay_out_user_days"), {"user_id": user_id, "zone": zone})
    return [tuple(row) for row in rows]
