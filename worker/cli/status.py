"""`hbw status` and `hbw health`: is the system keeping up, and is it ready?"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from worker.cli.common import add_command, servers_for
from worker.errors import EXIT_FAILED, EXIT_OK
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.runtime.status import Status


def add_status(commands) -> None:
    parser = add_command(
        commands, "status", status, help="queues, lag, workers, throughput and the last daily reprocess"
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2)",
    )
    parser.add_argument(
        "--max-lag",
        type=float,
        metavar="SECONDS",
        help="unhealthy above this lag (default HBW_MAX_LAG_SECONDS)",
    )


def status(args: argparse.Namespace, settings: Settings) -> int:
    """Show, per queue, the messages ready, delayed (retries and debounced derived jobs), in
    flight and dead-lettered, and the lag (age of the oldest ready message); the workers alive
    (and those broken or stuck, with the reason); Redis's memory; messages and heartbeats
    processed in the last minute; pending recomputations; and the last daily reprocess.

    exit codes: 0 ok, 1 some queue lags more than --max-lag seconds, Redis refuses writes (out
    of memory) or a worker is broken or stuck (for health checks)

    examples:
      hbw status
      hbw status --json
      hbw status --watch 2
    """
    from rich.console import Console

    from worker.database import get_engine
    from worker.runtime.broker import make_broker
    from worker.runtime.status import collect_status

    max_lag = args.max_lag if args.max_lag is not None else settings.max_lag_seconds
    with servers_for(settings) as settings:
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


def render_status(status: Status, max_lag: float, console) -> None:
    """The status as a table (rich); lag above `max_lag` and every problem in red."""
    from rich.markup import escape
    from rich.table import Table

    when = time.strftime("%H:%M:%S", time.localtime(status.checked_at))
    table = Table(title=f"queues at {when}", title_justify="left")
    for column in ("queue", "ready", "delayed", "in flight", "dead", "lag", "done/min"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for q in status.queues:
        lag = f"{q.lag_seconds:,.1f}s"
        table.add_row(
            q.name,
            f"{q.ready:,}",
            f"{q.delayed:,}",
            f"{q.in_flight:,}",
            f"[red]{q.dead_lettered:,}[/]" if q.dead_lettered else "0",
            f"[red]{lag}[/]" if q.lag_seconds > max_lag else lag,
            f"{q.processed_last_minute:,}",
        )
    console.print(table)
    dead = ""
    if status.workers_dead:
        dead = f", [red]{status.workers_dead} dead (their messages are being recovered)[/]"
    unhealthy = f", [red]{len(status.workers_unhealthy)} unhealthy[/]" if status.workers_unhealthy else ""
    console.print(f"workers: {status.workers_alive} alive{unhealthy}{dead}")
    console.print(f"redis: {status.redis.get('usage', '?')}")
    console.print(f"heartbeats stored in the last minute: {status.heartbeats_stored_last_minute:,}")
    if status.pending_recomputes is not None:
        console.print(f"derived work pending (deltas, stale user-days): {status.pending_recomputes:,}")
    if status.failed_recomputes:
        console.print(f"[red]failed recomputations: {status.failed_recomputes:,} (hbw dlq list says why)[/]")
    last = status.last_reprocess
    if last:
        took = f", took {last['seconds']}s" if last["seconds"] is not None else ""
        error = f" error: {last['error']}" if last["error"] else ""
        console.print(
            f"last daily reprocess: {last['run_key']} {last['status']} "
            f"(started {last['started_at']}{took}, {last['user_days']:,} user-days){error}"
        )
    else:
        console.print("last daily reprocess: never")
    for problem in status.problems(max_lag):
        console.print(f"[red]{escape(problem)}[/]")


def add_health(commands) -> None:
    parser = add_command(
        commands, "health", health, help="exit 0 when PostgreSQL, the schema, Redis (and workers) are ready"
    )
    parser.add_argument("--workers", type=int, default=0, metavar="N", help="require N live workers")


def health(args: argparse.Namespace, settings: Settings) -> int:
    """Check that PostgreSQL answers and has the current schema, that Redis answers and takes
    writes (not out of memory), and with --workers N that at least N workers are alive and
    healthy (no dead threads, not stuck). For process managers and Kubernetes probes: prints one
    line per check, exits 0 when all pass, 1 otherwise.

    examples:
      hbw health                 # readiness: dependencies are up
      hbw health --workers 1     # liveness of a deployment: someone is consuming
    """
    from worker.runtime.health import check_health

    with servers_for(settings) as settings:
        checks = check_health(settings, workers=args.workers)
    for check in checks:
        print(f"{'ok' if check.ok else 'FAIL':4}  {check.name}: {check.detail}")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED
