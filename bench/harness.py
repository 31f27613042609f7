"""What every benchmark shares: a database and Redis namespace of its own, and the small tools to
measure in them (row counts, totals snapshots, waiting until drained, progress bars, percentiles).

Split out of bench.phases because `python -m bench`, bench.stages, bench.live and bench.ingest_http
all set up and measure the same way.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
import urllib.request

import dramatiq
import redis
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db import stale as db_stale
from db.derived_jobs import DERIVED_JOBS
from db.schema import apply_schema
from jobs.heartbeat import chunked
from worker.database import get_engine
from worker.runtime.messages import QUEUES
from worker.runtime.redis_keys import queues_empty
from worker.settings import Settings, get_settings

DATABASE = "hbw_bench"
NAMESPACE = "hbw-bench"


def bench_environment(
    settings: Settings, database: str = DATABASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """A fresh database and a Redis namespace of our own; the environment the workers get."""
    bench_url = recreate_database(settings.database_url, database)
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "REDIS_URL": settings.redis_url,
        "HBW_REDIS_NAMESPACE": namespace,
        "HBW_LOG_LEVEL": os.environ.get("HBW_LOG_LEVEL", "WARNING"),
    }
    os.environ.update(env)
    get_settings.cache_clear()
    with get_engine(bench_url).begin() as conn:
        apply_schema(conn)
    return env


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server of `server_url`; returns its URL."""
    url = sa.engine.make_url(server_url)
    admin = get_engine(url.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def purge(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    for chunk in chunked(keys, 1000):
        client.delete(*chunk)


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def snapshot(engine: sa.Engine) -> dict[str, tuple]:
    """Row counts and total seconds (to the millisecond) of the three totals tables."""
    out = {}
    with engine.connect() as conn:
        for table in (job.total_table for job in DERIVED_JOBS if job.total_table):
            row = conn.execute(
                sa.text(
                    f"SELECT count(*), round(sum(total_seconds)::numeric, 3), "
                    f"sum(heartbeat_count) FROM {table}"
                )
            ).one()
            out[table] = tuple(row)
    return out


def wait_drained(
    engine: sa.Engine, broker: dramatiq.Broker, queues=QUEUES, poll: float = 0.1, timeout: float | None = None
) -> bool:
    """Until no message is queued, delayed or in flight and no recomputation is pending; False
    if that took longer than `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if queues_empty(broker, queues):
            with engine.connect() as conn:
                if db_stale.count_pending(conn) == (0, 0) and queues_empty(broker, queues):
                    return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(poll)


def progress(console: Console) -> Progress:
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen) -> None:
    """Until `hbw serve` on `port` answers /readyz (or its process exits)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hbw serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("hbw serve did not become ready")


def storage(engine: sa.Engine) -> dict[str, dict[str, float]]:
    """Bytes on disk (heap, TOAST, indexes) per row: the raw heartbeats (all their monthly
    partitions) and each derived table."""
    from db.derived_jobs import DERIVED_JOBS
    from db.partitions import heartbeat_bytes

    with engine.connect() as conn:
        conn.execute(sa.text("CHECKPOINT"))  # (sizes as written, not as buffered)
        raw, rows = heartbeat_bytes(conn)
        sizes = {"heartbeats": {"rows": rows, "bytes_per_row": raw / max(rows, 1)}}
        tables = [t for job in DERIVED_JOBS for t in (job.day_table, job.total_table) if t]
        for table in tables:
            size, count = conn.execute(
                sa.text(f"SELECT pg_total_relation_size('{table}'), (SELECT count(*) FROM {table})")
            ).one()
            sizes[table] = {"rows": count, "bytes_per_row": size / max(count, 1)}
    return sizes
