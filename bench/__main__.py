"""python -m bench: heartbeat-worker's throughput and cost, side by side with the physical
ceiling and the naive design, measured in one run on this machine. See BENCHMARKS.md.

Uses DATABASE_URL / REDIS_URL when set (else the embedded servers), in a database of its own
(`hbw_bench`, recreated) and a Redis namespace of its own, so it never touches real data.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from bench import phases, procs, report
from worker.cli.common import servers_for
from worker.errors import ConfigError
from worker.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark heartbeat-worker against the COPY ceiling and the naive design, in one run.",
    )
    parser.add_argument(
        "-n", "--heartbeats", type=int, default=1_000_000, help="data set size (default 1,000,000)"
    )
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=20_000,
        help="heartbeats the naive design processes (default 20,000; it is slow)",
    )
    parser.add_argument("--latency-calls", type=int, default=4_000, help="25-heartbeat enqueue calls timed")
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        metavar="MINUTES",
        help="also feed the workers at a steady rate for MINUTES and report RSS over time",
    )
    parser.add_argument("--soak-rate", type=int, default=5_000, help="heartbeats/s during the soak")
    parser.add_argument(
        "--json", default="bench-results.json", metavar="PATH", help="where to write the results"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        with servers_for(get_settings()) as settings:
            results = phases.run_all(settings, args, console)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    results["machine"] = procs.machine("%Y-%m-%d")
    report.print_table(results, Console())
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, default=str)
    console.print(f"results written to {args.json}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
