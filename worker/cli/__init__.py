"""`hbw`: the command line. Every command reads its configuration from the environment
(DATABASE_URL, REDIS_URL, HBW_*), logs to stderr, prints results to stdout, and exits with a
code scripts and cron can trust (see EXIT CODES in `hbw --help`).

One module per command group, each parser right above its handler, which it names with
``set_defaults(func=...)``; :func:`main` turns every failure into one line and an exit code, in
one place (worker.errors.reported).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from worker.cli import demo as demo_command
from worker.cli import dlq, enqueue, history, keys, projects, runs, schema, serve, status, users, workers
from worker.errors import EXIT_CONFIG, check_urls, reported, settings_problem
from worker.logs import configure_logging
from worker.settings import get_settings

DESCRIPTION = """\
heartbeat-worker: background jobs for coding-activity heartbeats.

Ingest services hand batches of WakaTime-style heartbeats to `hbw enqueue` (or the Python
producer API); workers store them, deduplicated, in PostgreSQL and keep the derived tables
projects, project_languages and user_agents up to date.

With DATABASE_URL / REDIS_URL unset, every command uses an embedded PostgreSQL and Redis that it
starts itself (data in HBW_DATA_DIR) and stops when the last command using them exits.
"""

EPILOG = """\
configuration (environment):
  DATABASE_URL          PostgreSQL, e.g. postgresql://user@host:5432/db
  REDIS_URL             Redis, e.g. redis://host:6379/0
                        (both unset: embedded servers; one set and not the other is refused
                        unless the other is the word `embedded`)
  HBW_DATA_DIR          where the embedded servers keep their data
  HBW_BATCH_SIZE        heartbeats per message (default 1000)
  HBW_TIMEOUT_SECONDS   keystroke timeout for coding time (default 900)
  HBW_PROCESSES, HBW_THREADS   worker processes and threads per process
  HBW_LOG_FORMAT        auto | json | console (default auto: console on a terminal)
  (docs/configuration.md lists every HBW_* setting)

exit codes (every failure is one line on stderr: what is wrong, what to do):
  0  success
  1  failure (PostgreSQL or Redis does not answer, enqueueing failed, a wait timed out)
  2  some input was rejected (the rest was enqueued), or a request refused (an alias chain, an
     unknown key or dead letter); also bad command-line usage
  3  configuration problem (schema not initialised, no such database, login refused, bad URL,
     embedded servers unusable, unreadable file)
  130  interrupted (Ctrl-C) before it finished; `hbw worker` and `hbw up` stop gracefully: 0

examples:
  hbw demo                          # everything, on a sample week: no setup needed
  hbw up                            # embedded servers + workers in the foreground
  hbw db init
  hbw enqueue heartbeats.jsonl
  cat batch.json | hbw enqueue - --json
  hbw worker --processes 2 --threads 4
  hbw worker --burst
  hbw reprocess --yesterday --wait
  hbw alias add alice web-app-old web-app
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbw",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        schema.add_db,
        enqueue.add_enqueue,
        workers.add_worker,
        status.add_status,
        status.add_health,
        runs.add_reprocess,
        runs.add_backfill,
        dlq.add_dlq,
        history.add_verify,
        history.add_prune,
        projects.add_alias,
        projects.add_project,
        users.add_user,
        serve.add_serve,
        keys.add_keys,
        demo_command.add_demo,
        workers.add_up,
    ):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as e:
        print(f"hbw: {settings_problem(e)}", file=sys.stderr)
        return EXIT_CONFIG
    quiet = getattr(args, "quiet", False) and "HBW_LOG_LEVEL" not in os.environ
    configure_logging(settings.log_format, "WARNING" if quiet else settings.log_level)

    def run() -> int:
        check_urls(settings.database_url, settings.redis_url)
        return args.func(args, settings)

    return reported(run)  # every failure of every command: one line and an exit code
