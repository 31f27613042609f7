"""Raw heartbeat storage: COPY into a staging table, then one set-based insert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from db.queries import Key, key_params, query

#: Columns a staged row carries, in order (received_at takes its default).
COLUMNS = (
    "dedup_hash", "user_id", "time", "entity", "type", "category", "project", "branch", "language",
    "is_write", "lines", "lineno", "cursorpos", "project_root_count", "line_additions",
    "line_deletions", "dependencies", "user_agent", "machine",
)  # fmt: skip
_TYPES = (
    "bytea", "text", "timestamptz", "text", "text", "text", "text", "text", "text",
    "bool", "int4", "int4", "int4", "int4", "int4", "int4", "text[]", "text", "text",
)  # fmt: skip
_COPY = f"COPY incoming_heartbeats ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_STAGING_READY = "hbw_staging_ready"


def stage_heartbeats(conn: sa.Connection, rows: Iterable[Sequence[object]]) -> None:
    """COPY rows (tuples in COLUMNS order) into this connection's staging table."""
    dbapi = conn.connection
    if not dbapi.info.get(_STAGING_READY):
        conn.execute(query("create_incoming"))
        dbapi.info[_STAGING_READY] = True
    with dbapi.driver_connection.cursor() as cur, cur.copy(_COPY) as copy:
        copy.set_types(_TYPES)
        for row in rows:
            copy.write_row(row)


def insert_staged(conn: sa.Connection) -> list[tuple[str, dt.date, int]]:
    """Move staged rows into `heartbeats`; returns (user_id, day, rows inserted) per user-day."""
    return [tuple(r) for r in conn.execute(query("insert_incoming"))]


def insert_user_days(conn: sa.Connection, keys: Sequence[Key]) -> None:
    if keys:
        conn.execute(query("insert_user_days"), key_params(keys))
