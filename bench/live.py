"""python -m bench.live: what live traffic costs, measured as it arrives (issue #16).

N users, each with a day of D heartbeats already stored (today, UTC), then M minutes at one
heartbeat per user every S seconds, handed to the real `hbw worker` (the Procfile's line, default
settings) in plain `enqueue_heartbeats` calls of 1-25, as an ingest service makes them. Reports
CPU per heartbeat by process kind, busy cores, derived lag, drain and idle cost, for several D
side by side, and the same run's backlog end to end and COPY ceiling. See BENCHMARKS.md.

Uses DATABASE_URL / REDIS_URL when set (else the embedded servers), in a database (`hbw_live`,
recreated for every phase) and a Redis namespace of its own. CPU is read from /proc for the
servers' and the workers' process trees only, so other people's work on the machine is left out,
unless they use the same servers: use the embedded (private) ones for figures worth keeping.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from rich.console import Console

from bench import data, harness, live_report, phases, procs
from bench.baselines import ceiling_phase
from bench.live_phase import LiveSizes, fresh_environment, live_phase
from bench.procs import Workers, hbw_command
from worker.cli.common import servers_for
from worker.errors import ConfigError
from worker.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--users", type=int, default=10_000, help="active users (default 10,000)")
    add("--minutes", type=float, default=3, help="length of each live phase (default 3)")
    add("--period", type=float, default=30, metavar="S", help="seconds between a user's heartbeats (30)")
    add("--days-heartbeats", type=_sizes, default=[100, 900], metavar="D,D,...",
        help="heartbeats already in each user's day, one live phase each (default 100,900)")  # fmt: skip
    add("--probes", type=int, default=100, help="users whose heartbeats are tracked for lag (100)")
    add("--backlog", type=int, default=200_000, metavar="N",
        help="heartbeats of the same run's backlog end to end and COPY ceiling (200,000; 0: no)")  # fmt: skip
    add("--idle-seconds", type=float, default=30, help="idle measurement after each live phase (30)")
    add("--drain-timeout", type=float, default=600, help="give up draining after this many seconds (600)")
    add("--no-verify", dest="verify", action="store_false", help="skip `hbw verify` after each phase")
    add("--seed", type=int, default=16)
    add("--json", default="bench-live.json", metavar="PATH", help="where to write the results")
    return parser


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give one or more sizes of at least 1, e.g. 100,900")
    return sizes


def backlog_phase(n: int, console: Console) -> dict[str, Any]:
    """`python -m bench`'s end-to-end phase and COPY ceiling on n heartbeats, for same-run ratios."""
    settings, env, engine, broker, meter = fresh_environment(console)
    console.print(f"backlog: {n:,} heartbeats end to end, then the COPY ceiling ...")
    items = data.generate(n)
    with Workers(hbw_command("worker"), env, expect=settings.processes) as workers:
        meter.roots["workers"] = workers.proc.pid
        before, producer = meter.read(), time.thread_time()
        e2e = phases.e2e_phase(items, engine, broker, settings.batch_size, console)
        e2e["cpu_us"] = meter.per_heartbeat(before, meter.read(), n, producer=time.thread_time() - producer)
    distinct, stored = data.distinct_count(items), harness.count(engine, "heartbeats")
    ceiling = ceiling_phase(engine)
    engine.dispose()
    return {
        "heartbeats": n,
        "e2e": e2e,
        "ceiling": {**ceiling, "us_per_row": 1e6 / ceiling["per_s"]},
        "e2e_vs_ceiling": e2e["per_s"] / ceiling["per_s"],
        "checks": {"backlog: every distinct heartbeat stored": stored == distinct},
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    settings, started = get_settings(), time.monotonic()
    results: dict[str, Any] = {
        "config": {**{k: v for k, v in vars(args).items() if k != "json"}},
        "workers": {"processes": settings.processes, "threads": settings.threads},
        "live": {},
        "checks": {},
    }
    if args.backlog:
        results["backlog"] = backlog_phase(args.backlog, console)
        results["checks"].update(results["backlog"].pop("checks"))
    sizes = LiveSizes(args.users, args.minutes * 60, args.period, min(args.probes, args.users))
    for d in args.days_heartbeats:
        phase = live_phase(sizes, d, args, console)
        results["checks"].update({f"D={d}: {name}": ok for name, ok in phase.pop("checks").items()})
        results["live"][str(d)] = phase
    results["servers"] = phase.pop("servers") if args.days_heartbeats else {}
    results["floors"] = live_report.floors(results)
    results["seconds"] = time.monotonic() - started
    results["ok"] = all(results["checks"].values())
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if min(args.users, args.probes) < 1 or args.minutes <= 0 or args.period <= 0:
        console.print("[red]error:[/] --users, --probes, --minutes and --period must be positive")
        return 2
    try:
        with servers_for(get_settings()):
            results = run(args, console)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    results["machine"] = procs.machine()
    live_report.print_report(results, Console())
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, default=str)
    console.print(f"results written to {args.json}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("HBW_LOG_LEVEL", "WARNING")
    sys.exit(main())
