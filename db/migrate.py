"""The queries of `hbw db migrate` (db/sql/migrate.sql): from an unpartitioned heartbeats table to
a partitioned one, beside live stores."""

from __future__ import annotations

import sqlalchemy as sa

from db.queries import query

#: The statements that start (or resume) a migration, in order: each is idempotent.
_PREPARE = (
    "create_migration_table",
    "create_migration_state",
    "start_migration_state",
    "ensure_ahead_partitions",
    "create_copy_function",
    "create_forget_function",
    "create_copy_trigger",
    "create_forget_trigger",
)


def prepare(conn: sa.Connection) -> None:
    for name in _PREPARE:
        conn.execute(query(name))


def copy_chunk(conn: sa.Connection, size: int) -> tuple[int, int]:
    """Copy the next `size` rows; returns (rows read, rows copied so far)."""
    user_id, time, dedup_hash, copied = conn.execute(query("select_migration_state")).one()
    params = {"user_id": user_id, "time": time, "dedup_hash": dedup_hash, "size": size}
    conn.execute(query("ensure_chunk_partitions"), params)
    read = conn.execute(query("copy_chunk"), params).scalar_one()
    return read, copied + read


def swap(conn: sa.Connection) -> None:
    conn.execute(query("swap_tables"))


def count_missing(conn: sa.Connection) -> int:
    return conn.execute(query("count_missing")).scalar_one()


def old_table_exists(conn: sa.Connection) -> bool:
    return conn.execute(query("old_table_exists")).scalar_one()


def drop_old_table(conn: sa.Connection) -> None:
    conn.execute(query("drop_old_table"))


def estimate_rows(conn: sa.Connection) -> int:
    return conn.execute(query("estimate_rows")).scalar_one()
