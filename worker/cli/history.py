"""`hbw verify` and `hbw prune`: checking the derived tables against the raw heartbeats, and
letting old raw heartbeats go while keeping what they add up to."""

from __future__ import annotations

import argparse
import json

from worker.cli.common import add_command, add_days, date_arg, day_range, follow, progress_bar, servers_for
from worker.errors import EXIT_FAILED, EXIT_OK
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger("hbw.cli")


def add_verify(commands) -> None:
    parser = add_command(
        commands, "verify", verify, help="check the derived tables against the raw heartbeats"
    )
    add_days(parser, required=False)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def verify(args: argparse.Namespace, settings: Settings) -> int:
    """Recompute, in read-only transactions, the derived rows of the user-days in the range
    (default: all) and the totals of their users, and report every row that differs from what is
    stored: missing, extra, or other seconds or counts. User-days with work still pending are
    skipped (they differ until the workers catch up). Writes nothing; `hbw reprocess` over the
    same range repairs any drift.

    exit codes: 0 no drift, 1 drift found

    examples:
      hbw verify --yesterday
      hbw verify --since 2024-01-01 --until 2024-01-31 --json
    """
    from dataclasses import asdict

    from db import runs as db_runs
    from jobs.verify import verify_range
    from worker.database import get_engine

    with servers_for(settings, redis=False) as settings:
        engine = get_engine(settings.database_url)
        with engine.connect() as conn:
            first, _ = db_runs.select_day_range(conn)
        since, until = day_range(args, default_since=first)
        with progress_bar(disable=args.json) as bar:
            progress = follow(bar, f"verifying {since}..{until}")
            report = verify_range(
                engine, since, until, user_id=args.user, timeout_us=settings.timeout_us, progress=progress
            )
    if args.json:
        document = {
            "since": str(since),
            "until": str(until),
            "user_days": report.user_days,
            "pending_user_days": report.pending_days,
            "users": report.users,
            "pending_users": report.pending_users,
            "drift_seconds": report.seconds,
            "drifts": [{**asdict(d), "day": str(d.day) if d.day else None} for d in report.drifts],
        }
        print(json.dumps(document, default=float))
        return EXIT_FAILED if report.drifts else EXIT_OK
    skipped = f" ({report.pending_days} user-day(s) with pending work skipped)" if report.pending_days else ""
    print(f"verified {report.user_days} user-day(s) and the totals of {report.users} user(s){skipped}")
    if report.drifts:
        print(f"drift in {len(report.drifts)} row(s), {report.seconds:.2f} s in all:")
    for d in report.drifts:
        where = f"{d.user_id} {d.day or ''} {d.name}".replace("  ", " ")
        stored, expected = (
            _amount(d.stored_seconds, d.stored_count),
            _amount(d.expected_seconds, d.expected_count),
        )
        print(f"  {d.table:<18} {where}: stored {stored}, raw heartbeats say {expected}")
    if not report.drifts:
        print("no drift")
    return EXIT_FAILED if report.drifts else EXIT_OK


def _amount(seconds, count) -> str:
    return "nothing" if count is None else f"{float(seconds):.2f} s / {count} heartbeat(s)"


def add_prune(commands) -> None:
    parser = add_command(
        commands, "prune", prune, help="delete old raw heartbeats, keeping what they add up to"
    )
    parser.add_argument(
        "--before", type=date_arg, required=True, metavar="YYYY-MM-DD", help="first day to keep"
    )
    parser.add_argument("--dry-run", action="store_true", help="only say how many days would be pruned")


def prune(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the raw heartbeats of every day before DATE (each user's own calendar day), in small
    batches (whole UTC months by dropping their partitions), and mark those days pruned. Their
    derived day rows are kept, so projects, languages and editors totals do not change, and no
    reprocess or backfill recomputes a pruned day again. Interrupted, the same command continues
    where it stopped.

    example:
      hbw prune --before 2024-01-01
    """
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
        with progress_bar() as bar:
            progress = follow(bar, f"pruning raw heartbeats before {args.before}")
            pruned = prune_before(engine, args.before, progress=progress)
    months = f" ({len(pruned.months)} month partition(s) dropped whole)" if pruned.months else ""
    print(f"pruned {pruned.days} user-day(s): {pruned.heartbeats} raw heartbeat(s) deleted, derived totals "
          f"kept{months}")  # fmt: skip
    log.info("prune.done", before=str(args.before), user_days=pruned.days, heartbeats=pruned.heartbeats,
             months=pruned.months)  # fmt: skip
    return EXIT_OK
