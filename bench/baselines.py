"""What the engine is measured against: one GROUP BY (the floor of a recomputation), reading the
same answer from raw heartbeats, the COPY ceiling, and the naive design (bench.naive).

Kept apart from bench.phases, which measures the engine itself; both check what they process.
"""

from __future__ import annotations

import io
import sys
import time

import sqlalchemy as sa
from rich.console import Console

from bench import data, harness
from bench.procs import Workers
from worker.runtime.redis_keys import queues_empty
from worker.settings import Settings


def group_by_phase(engine, n: int) -> float:
    """The floor of any recomputation: one aggregate over the same rows (best of 3, warm)."""
    best = float("inf")
    with engine.connect() as conn:
        for _ in range(3):
            started = time.perf_counter()
            conn.execute(
                sa.text(
                    "SELECT user_id, project, language, user_agent, count(*) "
                    "FROM heartbeats GROUP BY 1, 2, 3, 4"
                )
            ).all()
            best = min(best, time.perf_counter() - started)
    return n / best


READ_DERIVED = sa.text("""
    SELECT p.name, l.language, l.total_seconds
    FROM projects p JOIN project_languages l ON l.user_id = p.user_id AND l.project = p.name
    WHERE p.user_id = :u
    ORDER BY p.total_seconds DESC, p.name, l.total_seconds DESC""")
READ_RAW = sa.text("""
    SELECT project, coalesce(language, 'Other') AS language, sum(credited_us) / 1e6 AS total_seconds
    FROM hbw_credited_heartbeats(
        ARRAY(SELECT user_id FROM user_days WHERE user_id = :u ORDER BY day),
        ARRAY(SELECT day FROM user_days WHERE user_id = :u ORDER BY day),
        :timeout_us)
    WHERE project IS NOT NULL
    GROUP BY 1, 2""")


def read_phase(engine, timeout_us: int, checks: dict[str, bool]) -> dict[str, float]:
    """The heavy user's projects with languages: from the derived tables vs. aggregated raw."""
    params = {"u": data.HEAVY_USER, "timeout_us": timeout_us}

    def timed(statement, runs: int) -> tuple[list[float], list]:
        times, rows = [], []
        with engine.connect() as conn:
            conn.execute(statement, params).all()  # warm
            for _ in range(runs):
                started = time.perf_counter()
                rows = conn.execute(statement, params).all()
                times.append((time.perf_counter() - started) * 1000)
        return times, rows

    derived_ms, derived = timed(READ_DERIVED, 1000)
    raw_ms, raw = timed(READ_RAW, 7)
    raw_answer = {(r.project, r.language): float(r.total_seconds) for r in raw}
    derived_answer = {(r.name, r.language): r.total_seconds for r in derived}
    checks["heavy-user read: derived equals raw aggregation"] = (
        raw_answer.keys() == derived_answer.keys()
        and all(abs(raw_answer[k] - derived_answer[k]) < 0.01 for k in raw_answer)
    )
    d50, d99 = harness.percentiles(derived_ms)
    r50, r99 = harness.percentiles(raw_ms)
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM heartbeats WHERE user_id = :u"), params
        ).scalar_one()
    return {
        "heavy_user_heartbeats": count,
        "rows": len(derived),
        "derived_p50_ms": d50,
        "derived_p99_ms": d99,
        "raw_p50_ms": r50,
        "raw_p99_ms": r99,
    }


def ceiling_phase(engine) -> dict[str, float]:
    """COPY of the stored rows into a table shaped like `heartbeats`, unique key included (best of 2)."""
    columns = (
        "user_id, time, dedup_hash, entity, type, category, project, branch, language, is_write, "
        "lines, lineno, cursorpos, project_root_count, line_additions, line_deletions, dependencies, "
        "user_agent, machine"
    )
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        buffer = io.BytesIO()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY (SELECT {columns} FROM heartbeats ORDER BY time) TO STDOUT") as cp,
        ):
            for block in cp:
                buffer.write(block)
        rows = conn.execute("SELECT count(*) FROM heartbeats").fetchone()[0]
        conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        conn.execute("CREATE TABLE bench_ceiling (LIKE heartbeats INCLUDING ALL)")
        conn.commit()
        best = float("inf")
        payload = buffer.getvalue()
        for _ in range(2):
            conn.execute("TRUNCATE bench_ceiling")
            conn.commit()
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY bench_ceiling ({columns}) FROM STDIN") as cp:
                for offset in range(0, len(payload), 1 << 20):
                    cp.write(payload[offset : offset + (1 << 20)])
            conn.commit()
            best = min(best, time.perf_counter() - started)
        conn.execute("DROP TABLE bench_ceiling")
        conn.commit()
    finally:
        raw.close()
    return {"per_s": rows / best, "rows": rows}


def naive_phase(sample, engine, env, settings: Settings, console: Console) -> dict[str, float]:
    """The first design, with the same processes and threads, on a sample."""
    naive_env = {**env, "REDIS_URL": settings.redis_url}
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(_naive_schema())
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "bench.naive",
        "--processes",
        str(settings.processes),
        "--threads",
        str(settings.threads),
    ]
    with Workers(command, naive_env, expect=settings.processes):
        from bench import naive  # sets the global broker: the last phase to send anything

        harness.purge(naive.broker.client, naive.NAMESPACE)
        started = time.perf_counter()
        with harness.progress(console) as progress:
            task = progress.add_task("naive: one message each", total=len(sample))
            for hb in sample:
                naive.store_heartbeat.send(hb)
            progress.update(task, completed=len(sample), description="naive: draining")
            while not queues_empty(naive.broker, [naive.QUEUE]):
                time.sleep(0.1)
        elapsed = time.perf_counter() - started
    harness.purge(naive.broker.client, naive.NAMESPACE)  # once its workers stopped beating
    return {"per_s": len(sample) / elapsed, "sample": len(sample), "seconds": elapsed}


def _naive_schema() -> str:
    from bench.naive import SCHEMA

    return SCHEMA
