"""`hbw db init`: the schema."""

from __future__ import annotations

import argparse

from worker.cli.common import servers_for, wrap
from worker.errors import EXIT_OK
from worker.settings import Settings


def add_db(commands) -> None:
    parser = commands.add_parser(
        "db", help="manage the database schema", description=wrap("Manage the database schema.")
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="apply schema.sql (safe to rerun)",
        description=wrap(
            "Create or upgrade the tables from schema.sql. Idempotent: safe to rerun, "
            "and safe to run from several machines at once (the Procfile's release step)."
        ),
    )
    init.set_defaults(func=db_init)


def db_init(args: argparse.Namespace, settings: Settings) -> int:
    from db.schema import apply_schema
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        version = apply_schema(conn)
    print(f"schema version {version} is in place")
    return EXIT_OK
