"""`hbw db migrate`: a database made before schema 13 moves its raw heartbeats into monthly
partitions, while workers keep storing.

1. A trigger on the old table gives the new, partitioned one every row stored (or pruned) from
   then on; creating it waits for the stores already running, so none is missed.
2. Chunks copy the rows that were there before, in key order, each in a short transaction that
   records the last key copied: interrupted, the command resumes after it. A row copied twice (by
   a chunk and by the trigger) is one row: the copy is an ``ON CONFLICT DO NOTHING``.
3. One short transaction locks the old table (stores wait a moment) and swaps the tables' names.
4. Every row of the old table is checked to be in the new one before the old one is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from db import migrate as db_migrate
from db import partitions as db_partitions


@dataclass(frozen=True)
class Migrated:
    #: False when the table was partitioned already (nothing done).
    migrated: bool
    copied: int = 0
    #: Rows of the old table missing from the new one (then the old one is kept).
    missing: int = 0
    old_table_kept: bool = False


def migrate_heartbeats(
    engine: sa.Engine,
    *,
    chunk_size: int = 10_000,
    keep_old: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
) -> Migrated | None:
    """Partition the raw heartbeats; None when stopped after `stop_after_chunks` (to resume)."""
    with engine.begin() as conn:
        if db_partitions.is_partitioned(conn):
            if db_migrate.old_table_exists(conn) and not keep_old:  # stopped after the swap: finish
                return _drop_old(engine, copied=0)
            return Migrated(migrated=False)
        db_migrate.prepare(conn)
        total = db_migrate.estimate_rows(conn)
    chunks = 0
    while True:
        if stop_after_chunks is not None and chunks == stop_after_chunks:
            return None
        with engine.begin() as conn:
            read, copied = db_migrate.copy_chunk(conn, chunk_size)
        chunks += 1
        if progress:
            progress(copied, max(total, copied))
        if read < chunk_size:
            break
    with engine.begin() as conn:
        db_migrate.swap(conn)
    if keep_old:
        return Migrated(True, copied, old_table_kept=True)
    return _drop_old(engine, copied)


def _drop_old(engine: sa.Engine, copied: int) -> Migrated:
    """Drop the old table once each of its rows is found in the new one; else keep it."""
    with engine.begin() as conn:
        missing = db_migrate.count_missing(conn)
        if not missing:
            db_migrate.drop_old_table(conn)
    return Migrated(True, copied, missing, old_table_kept=bool(missing))
