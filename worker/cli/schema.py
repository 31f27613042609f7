"""`hbw db init`: the schema."""

from __future__ import annotations

import argparse

from worker.cli.common import add_command, add_group, transaction
from worker.errors import EXIT_OK
from worker.settings import Settings

DB = """Manage the database schema."""


def add_db(commands) -> None:
    actions = add_group(commands, "db", DB, help="manage the database schema")
    add_command(actions, "init", db_init, help="apply schema.sql (safe to rerun)")


def db_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create or upgrade the tables from schema.sql. Idempotent: safe to rerun, and safe to run
    from several machines at once (the Procfile's release step)."""
    from db.schema import apply_schema

    with transaction(settings) as conn:
        version = apply_schema(conn)
    print(f"schema version {version} is in place")
    return EXIT_OK
