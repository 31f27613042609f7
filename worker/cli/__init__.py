"""`hbw`: the command line. Every command reads its configuration from the environment
(DATABASE_URL, REDIS_URL, HBW_*), logs to stderr, prints results to stdout, and exits with a
code scripts and cron can trust (see EXIT CODES in `hbw --help`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence

from pydantic import ValidationError

from worker.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    ConfigError,
    UsageError,
    check_urls,
    reported,
    settings_problem,
)
from worker.logs import configure_logging, get_logger
from worker.runtime.messages import QUEUES
from worker.settings import Settings, get_settings

log = get_logger("hbw.cli")


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
  (the README lists every HBW_* setting)

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


def _wrap(text: str) -> str:
    """Subcommand descriptions, wrapped like the rest of the help (the formatter keeps epilogs raw)."""
    return textwrap.fill(text, 92)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbw",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = commands.add_parser(
        "db", help="manage the database schema", description=_wrap("Manage the database schema.")
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser(
        "init",
        help="apply schema.sql (safe to rerun)",
        description=_wrap(
            "Create or upgrade the tables from schema.sql. Idempotent: safe to rerun, "
            "and safe to run from several machines at once (the Procfile's release step)."
        ),
    )

    enqueue = commands.add_parser(
        "enqueue",
        help="validate heartbeats and enqueue them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Read heartbeats (JSON lines, or a JSON array), validate each one, and enqueue "
            "the valid ones in messages of at most HBW_BATCH_SIZE heartbeats, as the input is read: "
            "memory does not grow with its size. Invalid items are reported with their index and the "
            "reason (with the line number for input that is not even JSON); the valid ones are "
            "enqueued anyway."
        ),
        epilog="exit codes: 0 all accepted, 2 some rejected (the rest enqueued), "
        "1 could not enqueue (the output says how many were enqueued before the failure)\n\n"
        "example:\n  hbw enqueue heartbeats.jsonl --json",
    )
    enqueue.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="input file, or - for stdin (default)"
    )
    enqueue.add_argument("--json", action="store_true", help="print the result as JSON")
    enqueue.add_argument(
        "--batch-size", type=_positive, help="heartbeats per message (default HBW_BATCH_SIZE)"
    )

    worker = commands.add_parser(
        "worker",
        help="run workers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Run worker processes that consume the queues. SIGTERM or Ctrl-C stops them "
            "gracefully: in-flight messages get HBW_SHUTDOWN_TIMEOUT seconds to finish, the rest "
            "go back to their queue. A worker process that dies is restarted."
        ),
        epilog=f"queues: {', '.join(QUEUES)}\n\n"
        "examples:\n  hbw worker --processes 2 --threads 4\n"
        "  hbw worker --queues heartbeats          # ingest only\n"
        "  hbw worker --queues projects languages user_agents recompute\n"
        "  hbw worker --burst                      # drain everything, then exit 0",
    )
    worker.add_argument("--processes", "-p", type=_positive, help="worker processes (default HBW_PROCESSES)")
    worker.add_argument("--threads", "-t", type=_positive, help="threads per process (default HBW_THREADS)")
    worker.add_argument(
        "--queues", "-Q", nargs="+", choices=QUEUES, metavar="QUEUE", help="only these queues"
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="exit 0 once every queue (including delayed retries) is empty, nothing is in flight "
        "and no recomputation is pending",
    )

    status = commands.add_parser(
        "status",
        help="queues, lag, workers, throughput and the last daily reprocess",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Show, per queue, the messages ready, delayed (retries and debounced derived jobs), in "
            "flight and dead-lettered, and the lag (age of the oldest ready message); the workers "
            "alive (and those broken or stuck, with the reason); Redis's memory; messages and heartbeats "
            "processed in the last minute; pending recomputations; and the last daily reprocess."
        ),
        epilog="exit codes: 0 ok, 1 some queue lags more than --max-lag seconds, Redis refuses writes (out\n"
        "of memory) or a worker is broken or stuck (for health checks)\n\n"
        "examples:\n  hbw status\n  hbw status --json\n  hbw status --watch 2",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2)",
    )
    status.add_argument(
        "--max-lag",
        type=float,
        metavar="SECONDS",
        help="unhealthy above this lag (default HBW_MAX_LAG_SECONDS)",
    )

    health = commands.add_parser(
        "health",
        help="exit 0 when PostgreSQL, the schema, Redis (and workers) are ready",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Check that PostgreSQL answers and has the current schema, that Redis answers and takes "
            "writes (not out of memory), and with --workers N that at least N workers are alive and "
            "healthy (no dead threads, not stuck). For process managers and Kubernetes probes: "
            "prints one line per check, exits 0 when all pass, 1 otherwise."
        ),
        epilog="examples:\n  hbw health                 # readiness: dependencies are up\n"
        "  hbw health --workers 1     # liveness of a deployment: someone is consuming",
    )
    health.add_argument("--workers", type=int, default=0, metavar="N", help="require N live workers")

    reprocess = commands.add_parser(
        "reprocess",
        help="recompute the derived tables for some days",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Enqueue the recomputation of every derived row fed by the user-days in the "
            "range (UTC days, inclusive), from the raw heartbeats; pruned days are left alone. Workers "
            "do the work; --wait waits for it (and the exit code then says whether it got done). Safe "
            "beside live workers. A run with the same range that is in progress is not doubled (this "
            "one reports it and exits 0, or waits for it with --wait); one already done is skipped "
            "unless --force. An interrupted run resumes where it stopped."
        ),
        epilog="examples:\n  hbw reprocess --yesterday --wait          # the daily cron job\n"
        "  hbw reprocess --since 2024-01-01 --until 2024-01-31 --user alice\n\n"
        "exit codes: 0 done, handed over (without --wait) or skipped; 1 timed out or failed",
    )
    when = reprocess.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=_date, metavar="YYYY-MM-DD", help="one UTC day")
    when.add_argument("--yesterday", action="store_true", help="yesterday (UTC)")
    when.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="first UTC day of a range")
    reprocess.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last UTC day (default: today)")
    reprocess.add_argument("--user", metavar="USER_ID", help="only this user")
    reprocess.add_argument("--wait", action="store_true", help="wait until the workers have done it")
    reprocess.add_argument("--force", action="store_true", help="run again a range that was already done")
    reprocess.add_argument(
        "--timeout",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="give up waiting after this long (default 3600)",
    )
    backfill = commands.add_parser(
        "backfill",
        help="recompute the derived tables over all history (or a range)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Recompute every derived row fed by the user-days with raw heartbeats in the range "
            "(default: all of them), once, when adopting the system or after changing "
            "HBW_TIMEOUT_SECONDS. Workers do the work; the backfill hands it over a chunk at a time, "
            "waiting for them to keep up, so it never holds a long transaction or floods Redis, and "
            "shows its progress. Interrupted (Ctrl-C, crash), the same command resumes where it "
            "stopped. Safe beside live workers and beside another run."
        ),
        epilog="examples:\n  hbw backfill\n  hbw backfill --since 2024-01-01 --user alice",
    )
    backfill.add_argument(
        "--since", type=_date, metavar="YYYY-MM-DD", help="first UTC day (default: the first)"
    )
    backfill.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last UTC day (default: today)")
    backfill.add_argument("--user", metavar="USER_ID", help="only this user")
    backfill.add_argument("--force", action="store_true", help="start over even if this backfill was done")
    backfill.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (default: never)"
    )

    dlq = commands.add_parser(
        "dlq",
        help="list, retry or purge dead-lettered messages",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Messages that can never succeed (malformed payloads, invalid heartbeats, unknown actors) "
            "are dead-lettered at once; others after HBW_MAX_RETRIES retries. They are kept "
            "HBW_DEAD_LETTER_TTL_DAYS days, with the reason. Retrying puts them back on their queue "
            "with a fresh retry budget (safe: the actors are idempotent)."
        ),
        epilog="examples:\n  hbw dlq list\n  hbw dlq retry --all --queue heartbeats\n  hbw dlq purge 3f2a…",
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    dlq_list = dlq_commands.add_parser("list", help="dead letters, oldest first, with the reason")
    dlq_list.add_argument("--queue", "-Q", choices=QUEUES, metavar="QUEUE", help="only this queue")
    dlq_list.add_argument("--limit", type=_positive, help="at most this many")
    dlq_list.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("retry", "put dead letters back on their queue"), ("purge", "delete dead letters")):
        sub = dlq_commands.add_parser(action, help=text)
        sub.add_argument(
            "ids", nargs="*", metavar="ID", help="dead-letter id or message id (see `hbw dlq list`)"
        )
        sub.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
        sub.add_argument("--queue", "-Q", choices=QUEUES, metavar="QUEUE", help="only this queue")

    verify = commands.add_parser(
        "verify",
        help="check the derived tables against the raw heartbeats",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Recompute, in read-only transactions, the derived rows of the user-days in the range "
            "(default: all) and the totals of their users, and report every row that differs from "
            "what is stored: missing, extra, or other seconds or counts. User-days with work still "
            "pending are skipped (they differ until the workers catch up). Writes nothing; "
            "`hbw reprocess` over the same range repairs any drift."
        ),
        epilog="exit codes: 0 no drift, 1 drift found\n\nexamples:\n  hbw verify --yesterday\n"
        "  hbw verify --since 2024-01-01 --until 2024-01-31 --json",
    )
    verify_when = verify.add_mutually_exclusive_group()
    verify_when.add_argument("--date", type=_date, metavar="YYYY-MM-DD", help="one UTC day")
    verify_when.add_argument("--yesterday", action="store_true", help="yesterday (UTC)")
    verify_when.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="first UTC day of a range")
    verify.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="last UTC day (default: today)")
    verify.add_argument("--user", metavar="USER_ID", help="only this user")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    prune = commands.add_parser(
        "prune",
        help="delete old raw heartbeats, keeping what they add up to",
        description=_wrap(
            "Delete the raw heartbeats of every UTC day before DATE, in small batches, and mark those "
            "days pruned. Their derived day rows are kept, so projects, languages and editors totals "
            "do not change, and no reprocess or backfill recomputes a pruned day again. Interrupted, "
            "the same command continues where it stopped."
        ),
        epilog="example:\n  hbw prune --before 2024-01-01",
    )
    prune.add_argument("--before", type=_date, required=True, metavar="YYYY-MM-DD", help="first day to keep")
    prune.add_argument("--dry-run", action="store_true", help="only say how many days would be pruned")

    alias = commands.add_parser(
        "alias",
        help="merge or rename projects with aliases",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "A heartbeat whose project is an alias counts towards the aliased project, for all "
            "history: adding or removing an alias re-sums the affected projects at once (raw "
            "heartbeats are not needed, so it works for pruned days too), and afterwards no project "
            "is listed under an alias name. Aliases do not chain: an alias of an alias is refused."
        ),
        epilog="examples:\n  hbw alias add alice web-app-old web-app\n  hbw alias rm alice web-app-old\n"
        "  hbw alias list alice",
    )
    alias_commands = alias.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    alias_add = alias_commands.add_parser("add", help="count ALIAS towards PROJECT")
    alias_add.add_argument("user", metavar="USER")
    alias_add.add_argument("alias", metavar="ALIAS")
    alias_add.add_argument("project", metavar="PROJECT")
    alias_rm = alias_commands.add_parser("rm", help="count ALIAS as its own project again")
    alias_rm.add_argument("user", metavar="USER")
    alias_rm.add_argument("alias", metavar="ALIAS")
    alias_list = alias_commands.add_parser("list", help="list a user's aliases")
    alias_list.add_argument("user", metavar="USER")
    alias_list.add_argument("--json", action="store_true", help="print JSON")

    project = commands.add_parser(
        "project",
        help="list projects, set their display name, color, description, archived flag",
        description=_wrap(
            "User-owned project metadata. Processing never overwrites it: it only sets a color, "
            "chosen from the name, when it first creates a project."
        ),
    )
    project_commands = project.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    project_list = project_commands.add_parser("list", help="a user's projects with coding time and metadata")
    project_list.add_argument("user", metavar="USER")
    project_list.add_argument("--json", action="store_true", help="print JSON")
    project_set = project_commands.add_parser("set", help="set metadata of one project")
    project_set.add_argument("user", metavar="USER")
    project_set.add_argument("project", metavar="PROJECT")
    project_set.add_argument(
        "--display-name", metavar="TEXT", help="shown instead of the name ('' clears it)"
    )
    project_set.add_argument("--color", metavar="#RRGGBB", help="for example #1f77b4")
    project_set.add_argument("--description", metavar="TEXT", help="free text ('' clears it)")
    archived = project_set.add_mutually_exclusive_group()
    archived.add_argument(
        "--archived", dest="is_archived", action="store_true", default=None, help="archive it"
    )
    archived.add_argument("--unarchived", dest="is_archived", action="store_false", help="unarchive it")

    serve = commands.add_parser(
        "serve",
        help="WakaTime-compatible HTTP ingest for editor plugins",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Serve WakaTime's heartbeat API: POST /api/v1/users/current/heartbeats and "
            "/api/v1/users/current/heartbeats.bulk. Point a plugin at it by setting api_url = "
            "http://HOST:PORT/api/v1 in ~/.wakatime.cfg, with an api_key from `hbw keys create USER`. "
            "A request is answered 201 once its heartbeats are queued, 503 when Redis cannot take them "
            "(clients keep them and retry). GET /healthz and /readyz are for probes."
        ),
        epilog="example:\n  hbw keys create alice\n  hbw serve --port 8080\n"
        "  # ~/.wakatime.cfg: api_url = http://localhost:8080/api/v1",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    serve.add_argument(
        "--port", type=int, default=os.environ.get("PORT", "8080"), help="port (default $PORT or 8080)"
    )
    serve.add_argument("--workers", "-w", type=_positive, default=1, help="server processes (default 1)")

    keys = commands.add_parser(
        "keys",
        help="API keys of `hbw serve`: create, list, revoke",
        description=_wrap(
            "Keys are in WakaTime's format (waka_ + a UUID v4), so plugins accept them. Only a hash is "
            "stored: a key is shown once, when it is created. A revoked key stops working within "
            "HBW_HTTP_KEY_CACHE_SECONDS."
        ),
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    keys_create = keys_commands.add_parser("create", help="issue a key for USER and print it")
    keys_create.add_argument("user", metavar="USER")
    keys_list = keys_commands.add_parser("list", help="USER's keys (last 4 characters, created, revoked)")
    keys_list.add_argument("user", metavar="USER")
    keys_list.add_argument("--json", action="store_true", help="print JSON")
    keys_revoke = keys_commands.add_parser("revoke", help="revoke one KEY, or every key of --user")
    target = keys_revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("key", metavar="KEY", nargs="?", help="the key to revoke")
    target.add_argument("--user", metavar="USER", help="revoke all of USER's keys")

    commands.add_parser(
        "demo",
        help="run the whole system on a sample week and print a report",
        description=_wrap(
            "Apply the schema, generate a realistic week of heartbeats for a few users, "
            "enqueue them, run workers until everything is drained, and print each user's projects with "
            "coding time, top languages and editors. Needs no setup: with DATABASE_URL / REDIS_URL unset "
            "it starts (and afterwards stops) the embedded servers. The sample is always the same week, "
            "so a second run stores nothing new and prints the same totals."
        ),
    )

    up = commands.add_parser(
        "up",
        help="start the embedded servers and run workers in the foreground",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Start the servers (the embedded ones unless DATABASE_URL / REDIS_URL are set), "
            "apply the schema and run workers in the foreground. From another terminal, `hbw enqueue "
            "FILE` finds the same servers. Ctrl-C stops the workers gracefully, then the servers."
        ),
        epilog="example:\n  hbw up                      # terminal 1\n"
        "  hbw enqueue examples/heartbeats.jsonl     # terminal 2",
    )
    up.add_argument("--processes", "-p", type=_positive, help="worker processes (default HBW_PROCESSES)")
    up.add_argument("--threads", "-t", type=_positive, help="threads per process (default HBW_THREADS)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as e:
        print(f"hbw: {settings_problem(e)}", file=sys.stderr)
        return EXIT_CONFIG
    quiet = args.command == "demo" and "HBW_LOG_LEVEL" not in os.environ  # the demo shows progress instead
    configure_logging(settings.log_format, "WARNING" if quiet else settings.log_level)
    handler = {
        "db": cmd_db,
        "enqueue": cmd_enqueue,
        "worker": cmd_worker,
        "reprocess": cmd_reprocess,
        "backfill": cmd_backfill,
        "prune": cmd_prune,
        "verify": cmd_verify,
        "dlq": cmd_dlq,
        "demo": cmd_demo,
        "up": cmd_up,
        "alias": cmd_alias,
        "project": cmd_project,
        "status": cmd_status,
        "health": cmd_health,
        "serve": cmd_serve,
        "keys": cmd_keys,
    }[args.command]

    def run() -> int:
        check_urls(settings.database_url, settings.redis_url)
        return handler(args, settings)

    return reported(run)  # every failure of every command: one line and an exit code


@contextlib.contextmanager
def servers_for(
    settings: Settings, *, database: bool = True, redis: bool = True, kept_by: set[int] | None = None
) -> Iterator[Settings]:
    """The servers a command uses (worker.embedded.servers.hold_servers); their problems are
    configuration errors."""
    from worker.embedded import EmbeddedError
    from worker.embedded.servers import hold_servers

    try:
        with hold_servers(settings, database=database, redis=redis, kept_by=kept_by) as settings:
            yield settings
    except EmbeddedError as e:
        raise ConfigError(str(e)) from None


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from db.schema import apply_schema
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        version = apply_schema(conn)
    print(f"schema version {version} is in place")
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli.input import RejectionSpool, open_input, read_items
    from worker.errors import describe
    from worker.producer import EnqueueError, enqueue_heartbeats
    from worker.runtime.broker import setup_broker

    with open_input(args.file) as stream, RejectionSpool() as rejected:
        with servers_for(settings, database=False) as settings:
            broker, batch_size = setup_broker(settings), args.batch_size or settings.batch_size
            try:  # streams: validated and enqueued a batch at a time as the input is read
                result = enqueue_heartbeats(read_items(stream), batch_size=batch_size, broker=broker,
                                            rejected=rejected)  # fmt: skip
                error, code = None, result.exit_code
            except EnqueueError as e:
                result, code = e.result, EXIT_FAILED
                error = f"could not enqueue: {describe(e.cause)} ({e.progress})"
        if args.json:
            result.write_json(sys.stdout, **({"error": error} if error else {}))
        else:
            print(f"accepted: {result.accepted}")
            print(f"rejected: {len(result.rejected)}")
            for rejection in result.rejected:
                print(f"  item {rejection.index}: {rejection.reason}")
            print(f"enqueued: {result.enqueued} heartbeats in {result.messages} message(s)")
    if error:
        print(f"hbw: {error}", file=sys.stderr)
    return code


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.runtime.supervisor import run_workers

    processes = args.processes or settings.processes
    with servers_for(settings) as settings, _metrics(settings, processes):
        return run_workers(
            settings,
            processes=processes,
            threads=args.threads or settings.threads,
            queues=args.queues,
            burst=args.burst,
        )


@contextlib.contextmanager
def _metrics(settings: Settings, processes: int) -> Iterator[None]:
    """Serve /metrics from this process while the workers run (HBW_METRICS_PORT, 0: off).

    With several processes their counters meet in a fresh PROMETHEUS_MULTIPROC_DIR, which must be
    set before prometheus_client is first imported, here and in the children that inherit it.
    """
    if not settings.metrics_port:
        yield
        return
    import shutil
    import tempfile

    directory = None
    if processes > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="hbw-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from worker.runtime.broker import make_broker
    from worker.runtime.metrics import MetricsServer

    server = None
    try:
        try:
            server = MetricsServer(
                make_broker(settings),
                settings.metrics_port,
                settings.worker_heartbeat_timeout_ms,
                host=settings.metrics_host,
            )
        except OSError as e:
            log.warning("metrics.unavailable", port=settings.metrics_port, error=str(e))
        yield
    finally:
        if server:
            server.close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from worker.runtime.status import render_status

    max_lag = args.max_lag if args.max_lag is not None else settings.max_lag_seconds
    with servers_for(settings) as settings:
        from worker.database import get_engine
        from worker.runtime.broker import make_broker
        from worker.runtime.status import collect_status

        broker, engine = make_broker(settings), get_engine(settings.database_url)

        def once() -> int:
            status = collect_status(broker, engine, heartbeat_timeout_ms=settings.worker_heartbeat_timeout_ms)
            if args.json:
                print(json.dumps(status.as_dict(), default=str), flush=True)
            else:
                render_status(status, max_lag, Console())
            return EXIT_FAILED if status.problems(max_lag) else EXIT_OK

        if not args.watch:
            return once()
        code = EXIT_OK
        try:
            while True:
                if not args.json:
                    Console().clear()
                code = once()
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return code


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from worker.runtime.health import check_health

    with servers_for(settings) as settings:
        checks = check_health(settings, workers=args.workers)
    for check in checks:
        print(f"{'ok' if check.ok else 'FAIL':4}  {check.name}: {check.detail}")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED


def cmd_reprocess(args: argparse.Namespace, settings: Settings) -> int:
    from worker.runs import RunSpec, run_key

    since, until = _day_range(args, default_since=None)
    spec = RunSpec("reprocess", run_key("reprocess", since, until, args.user), since, until, args.user)
    return _run(args, settings, spec, wait=args.wait, pace=False)


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from db import runs as db_runs
    from worker.database import get_engine
    from worker.runs import RunSpec, run_key

    with servers_for(settings) as settings:
        with get_engine(settings.database_url).connect() as conn:
            first, _ = db_runs.select_day_range(conn)
        if first is None and not args.since:
            print("nothing to backfill: no heartbeats stored yet")
            return EXIT_OK
        since, until = _day_range(args, default_since=first)
        # The key names what was asked, so a rerun resumes even after the defaults moved on.
        key = run_key("backfill", args.since or "first", args.until or "today", args.user)
        return _run(args, settings, RunSpec("backfill", key, since, until, args.user), wait=True, pace=True)


def _run(args: argparse.Namespace, settings: Settings, spec, *, wait: bool, pace: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from worker.database import get_engine
    from worker.runs import execute_run
    from worker.runtime.broker import setup_broker

    with servers_for(settings) as settings:
        engine, broker = get_engine(settings.database_url), setup_broker(settings)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        bar = Progress(*columns, transient=False, disable=not (wait and pace))
        with bar:
            task = bar.add_task(f"{spec.key}: user-days recomputed", total=None)
            try:
                outcome = execute_run(
                    engine,
                    broker,
                    spec,
                    keys_per_message=settings.recompute_keys_per_message,
                    chunk_size=settings.run_chunk_size,
                    force=args.force,
                    wait=wait,
                    timeout=args.timeout,
                    pace=pace,
                    progress=lambda done, total: bar.update(task, completed=max(done, 0), total=total),
                )
            except KeyboardInterrupt:
                print(f"interrupted: run the same command again to resume {spec.key}", file=sys.stderr)
                return EXIT_FAILED
    stream = sys.stderr if outcome.exit_code else sys.stdout
    print(outcome.message, file=stream)
    return outcome.exit_code


def _day_range(args: argparse.Namespace, *, default_since: dt.date | None) -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    if getattr(args, "yesterday", False):
        return today - dt.timedelta(days=1), today - dt.timedelta(days=1)
    if getattr(args, "date", None):
        if args.until:
            raise UsageError("--until goes with --since")
        return args.date, args.date
    since, until = args.since or default_since, args.until or today
    if since is None:
        since = until
    if until < since:
        raise UsageError(f"--until {until} is before --since {since}")
    return since, until


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from worker.runtime import deadletters
    from worker.runtime.broker import setup_broker

    queues = [args.queue] if args.queue else list(QUEUES)
    with servers_for(settings, database=False) as settings:
        broker = setup_broker(settings)
        letters = deadletters.list_dead_letters(broker, queues, limit=getattr(args, "limit", None))
        if args.dlq_command == "list":
            if args.json:
                print(json.dumps([letter.as_dict() for letter in letters]))
                return EXIT_OK
            for letter in letters:
                when = dt.datetime.fromtimestamp(letter.died_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                print(f"{letter.redis_message_id}  {letter.queue:<11} {when}  {letter.actor or '?'}  "
                      f"retries={letter.retries}  {letter.error or ''}")  # fmt: skip
            print(f"{len(letters)} dead letter(s)")
            return EXIT_OK
        if not args.all and not args.ids:
            raise UsageError(f"say which dead letters to {args.dlq_command}: IDs, or --all")
        chosen = letters if args.all else [
            letter for letter in letters if {letter.redis_message_id, letter.message_id} & set(args.ids)
        ]  # fmt: skip
        unknown = set(args.ids) - {
            i for letter in chosen for i in (letter.redis_message_id, letter.message_id)
        }
        if unknown:
            print(f"hbw: no dead letter {', '.join(sorted(unknown))}", file=sys.stderr)
        if args.dlq_command == "retry":
            retried, skipped = deadletters.retry(broker, chosen)
            print(f"retried {retried} dead letter(s)")
            for letter in skipped:
                print(f"  cannot retry {letter.redis_message_id}: it is not a decodable message (purge it)")
        else:
            print(f"purged {deadletters.purge(broker, chosen)} dead letter(s)")
    return EXIT_REJECTED if unknown else EXIT_OK


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from db import runs as db_runs
    from jobs.verify import verify_range
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings:
        engine = get_engine(settings.database_url)
        with engine.connect() as conn:
            first, _ = db_runs.select_day_range(conn)
        since, until = _day_range(args, default_since=first)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=args.json) as bar:
            task = bar.add_task(f"verifying {since}..{until}", total=None)
            report = verify_range(
                engine, since, until, user_id=args.user, timeout_us=settings.timeout_us,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    if args.json:
        drifts = [{**asdict(d), "day": str(d.day) if d.day else None} for d in report.drifts]
        print(json.dumps({"since": str(since), "until": str(until), "user_days": report.user_days,
                          "pending_user_days": report.pending_days, "users": report.users,
                          "pending_users": report.pending_users, "drift_seconds": report.seconds,
                          "drifts": drifts}, default=float))  # fmt: skip
    else:
        skipped = (
            f" ({report.pending_days} user-day(s) with pending work skipped)" if report.pending_days else ""
        )
        print(f"verified {report.user_days} user-day(s) and the totals of {report.users} user(s){skipped}")
        if report.drifts:
            print(f"drift in {len(report.drifts)} row(s), {report.seconds:.2f} s in all:")
        for d in report.drifts:
            where = f"{d.user_id} {d.day or ''} {d.name}".replace("  ", " ")
            print(f"  {d.table:<18} {where}: stored {_fmt(d.stored_seconds, d.stored_count)}, "
                  f"raw heartbeats say {_fmt(d.expected_seconds, d.expected_count)}")  # fmt: skip
        if not report.drifts:
            print("no drift")
    return EXIT_FAILED if report.drifts else EXIT_OK


def _fmt(seconds, count) -> str:
    return "nothing" if count is None else f"{float(seconds):.2f} s / {count} heartbeat(s)"


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from db import retention as db_retention
    from jobs.retention import prune_before
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings:
        engine = get_engine(settings.database_url)
        if args.dry_run:
            with engine.connect() as conn:
                count = db_retention.count_days_to_prune(conn, args.before)
            print(f"{count} user-day(s) before {args.before} to prune")
            return EXIT_OK
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as bar:
            task = bar.add_task(f"pruning raw heartbeats before {args.before}", total=None)
            days, heartbeats = prune_before(
                engine,
                args.before,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    print(f"pruned {days} user-day(s): {heartbeats} raw heartbeat(s) deleted, derived totals kept")
    log.info("prune.done", before=str(args.before), user_days=days, heartbeats=heartbeats)
    return EXIT_OK


def cmd_alias(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import ProjectError, add_alias, list_aliases, remove_alias
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        try:
            if args.alias_command == "add":
                change = add_alias(conn, args.user, args.alias, args.project)
                was = f" (was an alias of {change.previous!r})" if change.previous else ""
                print(f"{change.alias!r} now counts towards {change.project!r}{was}")
            elif args.alias_command == "rm":
                change = remove_alias(conn, args.user, args.alias)
                print(
                    f"{change.alias!r} counts as its own project again (was an alias of {change.previous!r})"
                )
            else:
                aliases = list_aliases(conn, args.user)
                if args.json:
                    print(json.dumps([{"alias": a, "project": p} for a, p in aliases]))
                for alias, project in [] if args.json else aliases:
                    print(f"{alias} -> {project}")
        except ProjectError as e:
            print(f"hbw: {e}", file=sys.stderr)
            return EXIT_REJECTED
    return EXIT_OK


def cmd_project(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.projects import ProjectError, list_projects, set_project_metadata
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        if args.project_command == "list":
            projects = list_projects(conn, args.user)
            if args.json:
                print(json.dumps(projects, default=str))
            for row in [] if args.json else projects:
                shown = f" ({row['display_name']})" if row["display_name"] else ""
                archived = " [archived]" if row["is_archived"] else ""
                print(f"{row['name']}{shown}  {row['color']}  {row['total_seconds'] / 3600:.2f} h{archived}")
            return EXIT_OK
        fields = {
            name: value
            for name, value in (
                ("display_name", args.display_name),
                ("color", args.color),
                ("description", args.description),
                ("is_archived", args.is_archived),
            )
            if value is not None
        }
        if not fields:
            print("hbw: nothing to set (see `hbw project set --help`)", file=sys.stderr)
            return EXIT_REJECTED
        try:
            row = set_project_metadata(conn, args.user, args.project, **fields)
        except ProjectError as e:
            print(f"hbw: {e}", file=sys.stderr)
            return EXIT_REJECTED
    print(json.dumps(row, default=str))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from worker.http.limits import uvicorn_options

    with servers_for(settings) as settings:
        print(f"serving WakaTime's API on http://{args.host}:{args.port}/api/v1", flush=True)
        uvicorn.run(
            "worker.http.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,  # our structlog chain, configured by the factory
            access_log=False,  # one `http.heartbeats` line per request instead
            timeout_graceful_shutdown=int(settings.shutdown_timeout),
            **uvicorn_options(settings),  # header size, read deadlines, trusted proxies
        )
    return EXIT_OK


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from db.keys import list_keys, revoke_user_keys
    from jobs.keys import ApiKeyError, create_key, revoke_key
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings, get_engine(settings.database_url).begin() as conn:
        try:
            if args.keys_command == "create":
                print(create_key(conn, args.user))
            elif args.keys_command == "list":
                rows = [
                    {"hint": f"...{r.hint}", "created_at": r.created_at, "revoked_at": r.revoked_at}
                    for r in list_keys(conn, args.user)
                ]
                if args.json:
                    print(json.dumps(rows, default=str))
                for row in [] if args.json else rows:
                    revoked = f"  revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else ""
                    print(f"{row['hint']}  created {row['created_at']:%Y-%m-%d %H:%M}{revoked}")
            elif args.user:
                print(f"revoked {revoke_user_keys(conn, args.user)} key(s) of {args.user!r}")
            else:
                print(f"revoked a key of {revoke_key(conn, args.key)!r}")
        except ApiKeyError as e:
            print(f"hbw: {e}", file=sys.stderr)
            return EXIT_REJECTED
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from worker.cli.demo import run_demo

    with servers_for(settings) as settings:
        return run_demo(settings, Console())


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from db.schema import apply_schema
    from worker.database import get_engine
    from worker.logs import redact
    from worker.runtime.supervisor import run_workers

    kept_by: set[int] = set()
    with servers_for(settings, kept_by=kept_by) as settings:
        with get_engine(settings.database_url).begin() as conn:
            apply_schema(conn)
        processes = args.processes or settings.processes
        threads = args.threads or settings.threads
        print(f"PostgreSQL  {redact(settings.database_url)}")
        print(f"Redis       {redact(settings.redis_url)}")
        print(f"workers     {processes} process(es) x {threads} thread(s); Ctrl-C stops everything")
        print("enqueue from another terminal with: hbw enqueue FILE", flush=True)
        code = run_workers(settings, processes=processes, threads=threads)
    if kept_by:
        print(f"workers stopped; the embedded servers keep running for {len(kept_by)} other hbw command(s)")
    else:
        print("stopped")
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
