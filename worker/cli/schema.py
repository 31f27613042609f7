"""`hbw db init`: the schema."""

from __future__ import annotations

import argparse

from worker.cli.common import add_command, add_group, positive, transaction
from worker.errors import EXIT_FAILED, EXIT_OK
from worker.settings import Settings

DB = """Manage the database schema."""


def add_db(commands) -> None:
    actions = add_group(commands, "db", DB, help="manage the database schema")
    add_command(actions, "init", db_init, help="apply schema.sql (safe to rerun)")
    migrate = add_command(
        actions, "migrate", db_migrate, help="partition the raw heartbeats of an older database by month"
    )
    migrate.add_argument(
        "--chunk-size", type=positive, default=10_000, help="rows per transaction (default 10000)"
    )
    migrate.add_argument(
        "--keep-old", action="store_true", help="keep the old table (heartbeats_unpartitioned)"
    )


def db_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create or upgrade the tables from schema.sql. Idempotent: safe to rerun, and safe to run
    from several machines at once (the Procfile's release step)."""
    from db.schema import apply_schema

    with transaction(settings) as conn:
        version = apply_schema(conn)
    print(f"schema version {version} is in place")
    return EXIT_OK


def db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Move the raw heartbeats of a database made before schema 13 into monthly partitions (run
    `hbw db init` first), while workers keep storing: a trigger gives the new table what is stored
    meanwhile, chunks copy the rest, then the tables swap names in a moment's lock. Interrupted,
    the same command resumes after the last chunk copied. The old table is dropped once every row
    of it is found in the new one (kept, and exit 1, otherwise). Nothing to do: exit 0.

    example:
      hbw db init && hbw db migrate
    """
    from jobs.migrate import migrate_heartbeats
    from worker.cli.common import follow, progress_bar, servers_for
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, progress_bar() as bar:
        done = migrate_heartbeats(
            get_engine(settings.database_url),
            chunk_size=args.chunk_size,
            keep_old=args.keep_old,
            progress=follow(bar, "copying raw heartbeats into monthly partitions"),
        )
    if not done.migrated:
        print("the raw heartbeats are partitioned already: nothing to do")
    elif done.missing:
        print(f"partitioned; {done.missing} row(s) of the old table are not in the new one (pruned since?): "
              "kept as heartbeats_unpartitioned")  # fmt: skip
        return EXIT_FAILED
    else:
        kept = "kept as heartbeats_unpartitioned" if done.old_table_kept else "dropped"
        print(f"partitioned: {done.copied} raw heartbeat(s) copied, the old table {kept}")
    return EXIT_OK
