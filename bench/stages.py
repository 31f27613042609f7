"""python -m bench.stages: what each stage of the pipeline costs on its own, per heartbeat.

The end-to-end figure of `python -m bench` mixes everything on two busy cores. This takes the
pipeline apart: it enqueues N heartbeats with no worker running, then drains one queue at a time
with a single `hbw worker --burst` of one thread (stores first, then each derived job, every
user-day recomputed exactly once), and reports the CPU each stage costs in the worker, in
PostgreSQL and in Redis, beside the COPY ceiling measured in the same run. A worker's start-up
(imports, connections), measured on an empty queue, is subtracted.

Uses the benchmark's database and Redis namespace (both recreated), like `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench import data, harness, phases
from bench.baselines import ceiling_phase
from bench.procs import cpu_seconds_by_program, hbw_command
from worker.cli.common import servers_for
from worker.database import get_engine
from worker.errors import ConfigError
from worker.runtime.broker import setup_broker
from worker.runtime.messages import QUEUES
from worker.settings import get_settings

REPORTED = ("python", "postgres", "redis-server")


def drain(queue: str, env: dict[str, str]) -> dict[str, float]:
    """One single-threaded burst worker on `queue`; wall seconds and CPU seconds by program."""
    before, started = cpu_seconds_by_program(), time.perf_counter()
    command = [*hbw_command("worker"), "-p", "1", "-t", "1", "--burst", "--queues", queue]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after, elapsed = cpu_seconds_by_program(), time.perf_counter() - started
    return {"seconds": elapsed, **{p: after.get(p, 0.0) - before.get(p, 0.0) for p in REPORTED}}


def run(n: int, console: Console) -> dict[str, Any]:
    settings = get_settings()
    env = harness.bench_environment(settings)
    # Derived messages due at once, and no metrics port: the burst workers run one after another.
    env.update(HBW_RECOMPUTE_DELAY_MS="0", HBW_METRICS_PORT="0", HBW_LOG_LEVEL="ERROR")
    settings = get_settings()
    broker = setup_broker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    harness.purge(client, harness.NAMESPACE)

    console.print(f"generating and enqueueing {n:,} heartbeats (no workers running) ...")
    phases.enqueue_phase(data.generate(n), broker, client, settings.batch_size)

    startup = drain("projects", env)  # still empty (nothing stored yet): start-up and shutdown only
    stages = {}
    for queue in QUEUES:
        console.print(f"draining {queue} ...")
        stages[queue] = drain(queue, env)
    engine = get_engine(settings.database_url, pool_size=2)
    left = harness.count(engine, "derived_deltas") + harness.count(engine, "stale_days")
    stored = harness.count(engine, "heartbeats")
    ceiling = ceiling_phase(engine)
    harness.purge(client, harness.NAMESPACE)

    def us(seconds: float) -> float:
        return round(max(seconds, 0.0) / n * 1e6, 1)

    result: dict[str, Any] = {"heartbeats": n, "stored": stored, "pending_left": left, "stages": {}}
    for queue, used in stages.items():
        result["stages"][queue] = {
            "per_s": n / used["seconds"],
            "worker_us": us(used["python"] - startup["python"]),
            "postgres_us": us(used["postgres"] - startup["postgres"]),
            "redis_us": us(used["redis-server"] - startup["redis-server"]),
        }
    result["ceiling"] = {"per_s": ceiling["per_s"], "us_per_row": round(1e6 / ceiling["per_s"], 1)}
    return result


def print_table(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"CPU per heartbeat by stage ({result['heartbeats']:,} heartbeats, one thread)")
    for column in ("stage", "alone", "worker", "PostgreSQL", "Redis", "all"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    total = 0.0
    for queue, s in result["stages"].items():
        stage = s["worker_us"] + s["postgres_us"] + s["redis_us"]
        total += stage
        table.add_row(queue, f"{s['per_s']:,.0f} hb/s", f"{s['worker_us']} µs", f"{s['postgres_us']} µs",
                      f"{s['redis_us']} µs", f"{stage:.1f} µs")  # fmt: skip
    table.add_row("all stages", "", "", "", "", f"{total:.1f} µs")
    table.add_row("ceiling: COPY", f"{result['ceiling']['per_s']:,.0f} rows/s", "", "", "",
                  f"{result['ceiling']['us_per_row']} µs")  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n", "--heartbeats", type=int, default=300_000, help="data set size (default 300,000)"
    )
    parser.add_argument(
        "--json", default="bench-stages.json", metavar="PATH", help="where to write the results"
    )
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        with servers_for(get_settings()):
            result = run(args.heartbeats, console)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    print_table(result, Console())
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    ok = result["pending_left"] == 0 and result["stored"] > 0
    if not ok:
        console.print(f"[red]not drained:[/] {result['pending_left']} pending recomputations left")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HBW_LOG_LEVEL", "WARNING")
    sys.exit(main())
