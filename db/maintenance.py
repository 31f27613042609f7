"""Vacuuming the outbox tables (derived_deltas, stale_days) when they have many dead rows."""

from __future__ import annotations

import sqlalchemy as sa

from db.queries import query

OUTBOX_TABLES = ("derived_deltas", "stale_days")


def dead_rows(conn: sa.Connection) -> dict[str, int]:
    """Dead (deleted, not yet vacuumed) rows per outbox table."""
    return {table: n for table, n in conn.execute(query("dead_rows"))}


def vacuum(conn: sa.Connection, table: str) -> None:
    """VACUUM one outbox table, skipping it when another vacuum has it. `conn` must be in
    autocommit mode (VACUUM cannot run in a transaction)."""
    if table not in OUTBOX_TABLES:
        raise ValueError(f"not an outbox table: {table!r}")
    conn.execute(query(f"vacuum_{table}"))
