"""`hbw reprocess` and `hbw backfill`: derived rows recomputed from the raw heartbeats by the
workers, in runs that resume after a crash and never double (jobs.runs)."""

from __future__ import annotations

import argparse
import sys

from worker.cli.common import add_command, add_days, date_arg, day_range, follow, progress_bar, servers_for
from worker.errors import EXIT_FAILED, EXIT_OK
from worker.settings import Settings


def add_reprocess(commands) -> None:
    parser = add_command(commands, "reprocess", reprocess, help="recompute the derived tables for some days")
    add_days(parser, required=True)
    parser.add_argument("--wait", action="store_true", help="wait until the workers have done it")
    parser.add_argument("--force", action="store_true", help="run again a range that was already done")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="give up waiting after this long (default 3600)",
    )


def reprocess(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue the recomputation of every derived row fed by the user-days in the range (each
    user's own calendar days, inclusive), from the raw heartbeats; pruned days are left alone.
    Workers do the work; --wait waits for it (and the exit code then says whether it got done).
    Safe beside live workers. A run with the same range that is in progress is not doubled (this
    one reports it and exits 0, or waits for it with --wait); one already done is skipped unless
    --force. An interrupted run resumes where it stopped.

    examples:
      hbw reprocess --yesterday --wait          # the daily cron job
      hbw reprocess --since 2024-01-01 --until 2024-01-31 --user alice

    exit codes: 0 done, handed over (without --wait) or skipped; 1 timed out or failed
    """
    from jobs.runs import RunSpec, run_key

    since, until = day_range(args, default_since=None)
    spec = RunSpec("reprocess", run_key("reprocess", since, until, args.user), since, until, args.user)
    return _run(args, settings, spec, wait=args.wait, pace=False)


def add_backfill(commands) -> None:
    parser = add_command(
        commands, "backfill", backfill, help="recompute the derived tables over all history (or a range)"
    )
    parser.add_argument("--since", type=date_arg, metavar="YYYY-MM-DD", help="first day (default: the first)")
    parser.add_argument("--until", type=date_arg, metavar="YYYY-MM-DD", help="last day (default: today)")
    parser.add_argument("--user", metavar="USER_ID", help="only this user")
    parser.add_argument("--force", action="store_true", help="start over even if this backfill was done")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (default: never)"
    )


def backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute every derived row fed by the user-days with raw heartbeats in the range
    (default: all of them), once, when adopting the system or after changing
    HBW_TIMEOUT_SECONDS. Workers do the work; the backfill hands it over a chunk at a time,
    waiting for them to keep up, so it never holds a long transaction or floods Redis, and shows
    its progress. Interrupted (Ctrl-C, crash), the same command resumes where it stopped. Safe
    beside live workers and beside another run.

    examples:
      hbw backfill
      hbw backfill --since 2024-01-01 --user alice
    """
    from db import runs as db_runs
    from jobs.runs import RunSpec, run_key
    from worker.database import get_engine

    with servers_for(settings) as settings:
        with get_engine(settings.database_url).connect() as conn:
            first, _ = db_runs.select_day_range(conn)
        if first is None and not args.since:
            print("nothing to backfill: no heartbeats stored yet")
            return EXIT_OK
        since, until = day_range(args, default_since=first)
        # The key names what was asked, so a rerun resumes even after the defaults moved on.
        key = run_key("backfill", args.since or "first", args.until or "today", args.user)
        return _run(args, settings, RunSpec("backfill", key, since, until, args.user), wait=True, pace=True)


def _run(args: argparse.Namespace, settings: Settings, spec, *, wait: bool, pace: bool) -> int:
    from jobs.runs import execute_run
    from worker.database import get_engine
    from worker.runtime.broker import setup_broker
    from worker.runtime.outbox import recompute_sender

    with servers_for(settings) as settings:
        engine, broker = get_engine(settings.database_url), setup_broker(settings)
        send = recompute_sender(engine, broker, keys_per_message=settings.recompute_keys_per_message)
        with progress_bar(disable=not (wait and pace)) as bar:
            try:
                outcome = execute_run(
                    engine,
                    send,
                    spec,
                    chunk_size=settings.run_chunk_size,
                    force=args.force,
                    wait=wait,
                    timeout=args.timeout,
                    pace=pace,
                    progress=follow(bar, f"{spec.key}: user-days recomputed"),
                )
            except KeyboardInterrupt:
                print(f"interrupted: run the same command again to resume {spec.key}", file=sys.stderr)
                return EXIT_FAILED
    stream = sys.stderr if outcome.exit_code else sys.stdout
    print(outcome.message, file=stream)
    return outcome.exit_code
