"""The benchmark's phases. Each returns plain numbers; run_all strings them together.

This module measures the engine itself (enqueue, latency, end to end, reprocess, soak); what it is
compared with is in bench.baselines, the shared set-up in bench.harness, the table in bench.report.
Every phase that processes data also checks the result (rows stored, totals equal after a
reprocess, the same answer from derived and raw reads), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis
import sqlalchemy as sa
from rich.console import Console

from bench import data, harness
from bench.baselines import ceiling_phase, group_by_phase, naive_phase, read_phase
from bench.procs import Workers, cpu_seconds_by_program, hbw_command
from db.derived_jobs import DERIVED_JOBS
from jobs.heartbeat import chunked
from jobs.runs import RunSpec, execute_run
from worker.database import get_engine
from worker.producer import enqueue_heartbeats
from worker.runtime.broker import setup_broker
from worker.runtime.outbox import recompute_sender
from worker.settings import Settings, get_settings

DERIVED = tuple(job.day_table for job in DERIVED_JOBS) + tuple(
    job.total_table for job in DERIVED_JOBS if job.total_table
)


def run_all(settings: Settings, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {"heartbeats": args.heartbeats, "checks": {}}
    env = harness.bench_environment(settings)
    settings = get_settings()
    engine = get_engine(settings.database_url, pool_size=4)
    broker = setup_broker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    harness.purge(client, harness.NAMESPACE)
    with engine.connect() as conn:
        results["postgres"] = conn.execute(sa.text("SHOW server_version")).scalar_one()
    results["redis"] = client.info("server")["redis_version"]
    results["workers"] = {
        "processes": settings.processes,
        "threads": settings.threads,
        "batch_size": settings.batch_size,
    }

    console.print(f"generating {args.heartbeats:,} heartbeats ...")
    items = data.generate(args.heartbeats)
    distinct = data.distinct_count(items)
    results["distinct"] = distinct
    results["users"] = len({item["user_id"] for item in items})

    console.print("enqueue (no workers running) ...")
    results["enqueue"] = enqueue_phase(items, broker, client, settings.batch_size)
    harness.purge(client, harness.NAMESPACE)
    results["enqueue"].update(latency_phase(items, broker, args.latency_calls))
    harness.purge(client, harness.NAMESPACE)

    worker_command = hbw_command("worker")  # the Procfile's worker line
    with Workers(worker_command, env, expect=settings.processes) as workers:
        results["e2e"] = e2e_phase(items, engine, broker, settings.batch_size, console)
        stored = harness.count(engine, "heartbeats")
        results["checks"]["every distinct heartbeat stored"] = stored == distinct
        results["storage"] = harness.storage(engine)
        before = harness.snapshot(engine)
        results["reprocess"] = reprocess_phase(engine, broker, settings, args.heartbeats, console)
        results["checks"]["reprocess from empty derived tables gives the same totals"] = (
            harness.snapshot(engine) == before
        )
        if args.soak:
            results["soak"] = soak_phase(items, broker, workers, args.soak, args.soak_rate, console)
    results["worker_rss_mb"] = max(workers.peak_kib.values(), default=0) / 1024
    results["worker_rss_each_mb"] = sorted(round(kib / 1024, 1) for kib in workers.peak_kib.values())

    results["reprocess"]["group_by_per_s"] = group_by_phase(engine, args.heartbeats)
    results["read"] = read_phase(engine, settings.timeout_us, results["checks"])
    results["ceiling"] = ceiling_phase(engine)
    results["naive"] = naive_phase(items[-args.naive_sample :], engine, env, settings, console)

    e2e, ceiling, naive = results["e2e"]["per_s"], results["ceiling"]["per_s"], results["naive"]["per_s"]
    results["ratios"] = {
        "e2e_vs_ceiling": e2e / ceiling,
        "e2e_vs_naive": e2e / naive,
        "reprocess_vs_group_by": results["reprocess"]["per_s"] / results["reprocess"]["group_by_per_s"],
        "read_speedup": results["read"]["raw_p50_ms"] / results["read"]["derived_p50_ms"],
    }
    results["ok"] = all(results["checks"].values())
    harness.purge(client, harness.NAMESPACE)
    return results


# -- phases -----------------------------------------------------------------------------------


def enqueue_phase(items, broker, client: redis.Redis, batch_size: int) -> dict[str, float]:
    """Producer throughput with batch-sized calls, and Redis memory per queued heartbeat."""
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    for chunk in chunked(items, batch_size):
        enqueue_heartbeats(chunk, batch_size=batch_size, broker=broker)
    elapsed = time.perf_counter() - started
    after = client.info("memory")["used_memory"]
    return {"per_s": len(items) / elapsed, "redis_bytes_per_heartbeat": (after - before) / len(items)}


def latency_phase(items, broker, calls: int) -> dict[str, float]:
    """What an ingest service waits for per request: 25 heartbeats validated and enqueued."""
    latencies = []
    for i in range(calls):
        chunk = items[(i * 25) % (len(items) - 25) :][:25]
        started = time.perf_counter()
        enqueue_heartbeats(chunk, batch_size=25, broker=broker)
        latencies.append((time.perf_counter() - started) * 1000)
    p50, p99 = harness.percentiles(latencies)
    return {"call25_p50_ms": p50, "call25_p99_ms": p99, "call25_per_s": 25 * calls / (sum(latencies) / 1000)}


def e2e_phase(items, engine, broker, batch_size: int, console: Console) -> dict[str, float]:
    """Enqueue everything into running workers; the clock stops when every table is up to date."""
    cpu_before = cpu_seconds_by_program()
    started = time.perf_counter()
    with harness.progress(console) as progress:
        task = progress.add_task("end to end: enqueue", total=len(items))
        for chunk in chunked(items, batch_size):
            enqueue_heartbeats(chunk, batch_size=batch_size, broker=broker)
            progress.advance(task, len(chunk))
        enqueued = time.perf_counter() - started
        progress.update(task, description="end to end: draining")
        harness.wait_drained(engine, broker)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds_by_program()
    cpu_us = {name: (cpu_after[name] - cpu_before.get(name, 0)) / len(items) * 1e6 for name in cpu_after}
    return {
        "per_s": len(items) / elapsed,
        "seconds": elapsed,
        "enqueue_seconds": enqueued,
        "cpu_us_per_heartbeat": {name: round(us, 1) for name, us in cpu_us.items() if us > 0.05},
    }


def reprocess_phase(engine, broker, settings: Settings, n: int, console: Console) -> dict[str, float]:
    """A full backfill from empty derived tables, through the running workers (as `hbw backfill`)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(DERIVED)}"))
        since, until = conn.execute(sa.text("SELECT min(day), max(day) FROM user_days")).one()
    spec = RunSpec("backfill", f"bench:{time.time()}", since, until)
    with harness.progress(console) as progress:
        task = progress.add_task("reprocess (user-days)", total=None)
        started = time.perf_counter()
        outcome = execute_run(
            engine,
            recompute_sender(engine, broker, keys_per_message=settings.recompute_keys_per_message),
            spec,
            force=True,
            wait=True,
            chunk_size=settings.run_chunk_size,
            pace=True,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            poll=0.1,  # the clock's precision (hbw backfill polls every 0.5 s)
        )
        harness.wait_drained(engine, broker)
        elapsed = time.perf_counter() - started
    assert outcome.status == "done", outcome
    return {"per_s": n / elapsed, "seconds": elapsed, "user_days": outcome.user_days}


def soak_phase(
    items, broker, workers: Workers, minutes: float, rate: int, console: Console
) -> dict[str, Any]:
    """Fresh heartbeats at a steady rate; worker RSS sampled every 10 s."""
    pool = [item for item in items if item["user_id"] != data.HEAVY_USER]
    first_sample = len(workers.samples)
    deadline = time.monotonic() + minutes * 60
    sent, round_ = 0, 0
    with harness.progress(console) as progress:
        task = progress.add_task("soak (seconds)", total=round(minutes * 60))
        started = time.monotonic()
        while time.monotonic() < deadline:
            tick = time.monotonic()
            batch = []
            for _ in range(rate):
                item = pool[sent % len(pool)]
                round_ = sent // len(pool)
                batch.append({**item, "user_id": f"{item['user_id']}~soak{round_}"})
                sent += 1
            enqueue_heartbeats(batch, batch_size=1000, broker=broker)
            progress.update(task, completed=round(time.monotonic() - started))
            time.sleep(max(0.0, 1 - (time.monotonic() - tick)))
    samples = workers.samples[first_sample:]
    series = [(round(t), round(max(rss.values(), default=0) / 1024, 1)) for t, rss in samples]
    settled = series[len(series) // 5 :] or series  # after the first fifth (warm-up)
    return {
        "minutes": minutes,
        "rate_per_s": rate,
        "heartbeats": sent,
        "rss_mb_series": series,
        "rss_mb_after_warmup": settled[0][1] if settled else None,
        "rss_mb_at_end": settled[-1][1] if settled else None,
    }
