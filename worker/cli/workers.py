"""`hbw worker` and `hbw up`: worker processes in the foreground, with their /metrics."""

from __future__ import annotations

import argparse
import contextlib

from worker.cli.common import add_command, positive, servers_for
from worker.cli.metrics import metrics_endpoint
from worker.runtime.messages import QUEUES
from worker.settings import Settings


def add_worker(commands) -> None:
    parser = add_command(commands, "worker", worker, help="run workers")
    _add_sizes(parser)
    parser.add_argument(
        "--queues",
        "-Q",
        nargs="+",
        choices=QUEUES,
        metavar="QUEUE",
        help=f"only these of {', '.join(QUEUES)}",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit 0 once every queue (including delayed retries) is empty, nothing is in flight "
        "and no recomputation is pending",
    )


def _add_sizes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", "-p", type=positive, help="worker processes (default HBW_PROCESSES)")
    parser.add_argument("--threads", "-t", type=positive, help="threads per process (default HBW_THREADS)")


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run worker processes that consume the queues. SIGTERM or Ctrl-C stops them gracefully:
    in-flight messages get HBW_SHUTDOWN_TIMEOUT seconds to finish, the rest go back to their
    queue. A worker process that dies is restarted.

    examples:
      hbw worker --processes 2 --threads 4
      hbw worker --queues heartbeats          # ingest only
      hbw worker --queues projects languages user_agents activity recompute
      hbw worker --burst                      # drain everything, then exit 0
    """
    from worker.runtime.supervisor import run_workers

    processes = args.processes or settings.processes
    with servers_for(settings) as settings, metrics_server(settings, processes):
        return run_workers(
            settings,
            processes=processes,
            threads=args.threads or settings.threads,
            queues=args.queues,
            burst=args.burst,
        )


def metrics_server(settings: Settings, processes: int) -> contextlib.AbstractContextManager[None]:
    """The workers' /metrics (HBW_METRICS_PORT): their counters, and the queue gauges and run
    timestamps when this server holds the deployment's lease (worker.runtime.metrics_server)."""

    def collectors() -> list:
        from worker.database import get_engine
        from worker.runtime.broker import make_broker
        from worker.runtime.metrics_server import queue_collectors

        return queue_collectors(
            make_broker(settings),
            settings.worker_heartbeat_timeout_ms,
            lease_s=settings.metrics_lease_s,
            engine=lambda: get_engine(settings.database_url, pool_size=1),
        )

    return metrics_endpoint(settings, settings.metrics_port, processes, collectors)


def add_up(commands) -> None:
    _add_sizes(
        add_command(commands, "up", up, help="start the embedded servers and run workers in the foreground")
    )


def up(args: argparse.Namespace, settings: Settings) -> int:
    """Start the servers (the embedded ones unless DATABASE_URL / REDIS_URL are set), apply the
    schema and run workers in the foreground. From another terminal, `hbw enqueue FILE` finds
    the same servers. Ctrl-C stops the workers gracefully, then the servers.

    example:
      hbw up                                    # terminal 1
      hbw enqueue examples/heartbeats.jsonl     # terminal 2
    """
    from db.errors import redact
    from db.schema import apply_schema
    from worker.database import get_engine
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
