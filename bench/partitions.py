"""python -m bench.partitions: what monthly partitions cost the live store, beside one table.

Two databases with the same history (users with a heartbeat every 40 minutes for MONTHS months):
one with the raw heartbeats partitioned by month (schema 13), one with them in one table as
before. Then a live store's statement, one heartbeat per store, timed in turns on each (psycopg's
prepared statements, as a worker runs them), a reprocess's recomputation of a month of days, and
the disk each takes per raw heartbeat.
Uses DATABASE_URL's server (databases hbw_bench_months and hbw_bench_flat, recreated).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import sqlalchemy as sa

from bench.harness import recreate_database
from db import derived as db_derived
from db import partitions as db_partitions
from db.engine import create_engine
from db.schema import apply_schema
from jobs.heartbeat import validate_heartbeats
from jobs.store import store_heartbeats
from tests.old_schemas import SCHEMA_12_HEARTBEATS
from worker.settings import get_settings

TIMEOUT_US = 900_000_000


def database(name: str, flat: bool, users: list[str], months: int, now: float) -> sa.Engine:
    engine = create_engine(recreate_database(get_settings().database_url, name), pool_size=1)
    with engine.begin() as conn:
        if flat:
            conn.execute(sa.text(SCHEMA_12_HEARTBEATS))
        apply_schema(conn)
    start = now - months * 30 * 86_400
    history = [{"user_id": u, "entity": f"f{i % 7}.py", "time": start + i * 2_400}
               for u in users for i in range(months * 30 * 36)]  # fmt: skip
    for first in range(0, len(history), 5_000):
        with engine.begin() as conn:
            store_heartbeats(
                conn, validate_heartbeats(history[first : first + 5_000]).accepted, timeout_us=TIMEOUT_US
            )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return engine


def store_ms(engine: sa.Engine, users: list[str], now: float, stores: int) -> list[float]:
    """Milliseconds per store of one new heartbeat (each user's latest), in one transaction."""
    samples = []
    with engine.connect() as conn, conn.begin():
        for k in range(stores):
            batch = validate_heartbeats(
                [{"user_id": users[k % len(users)], "entity": "new.py", "time": now + k}]
            )
            started = time.perf_counter()
            store_heartbeats(conn, batch.accepted, timeout_us=TIMEOUT_US)
            samples.append((time.perf_counter() - started) * 1000)
        conn.rollback()
    return samples[20:]  # (after psycopg prepares the statements)


def recompute_us(engine: sa.Engine, users: list[str], now: float, chunk: int = 200) -> float:
    """Microseconds per user-day of recomputing a month of every user's days (reprocess's
    statement, 200 user-days a statement), in a transaction rolled back."""
    first = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=60)
    keys = [(u, first + dt.timedelta(days=d)) for u in users for d in range(30)]
    with engine.connect() as conn, conn.begin():
        started = time.perf_counter()
        for start in range(0, len(keys), chunk):
            db_derived.recompute_days(conn, keys[start : start + chunk], TIMEOUT_US)
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed / len(keys) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.partitions", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--months", type=int, default=24, help="months of history (default 24)")
    parser.add_argument("--stores", type=int, default=600, help="stores timed per turn")
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args(argv)
    users, now = [f"user-{n:03}" for n in range(args.users)], time.time() - 3_600
    engines = {
        "months": database("hbw_bench_months", False, users, args.months, now),
        "one table": database("hbw_bench_flat", True, users, args.months, now),
    }
    medians: dict[str, list[float]] = {name: [] for name in engines}
    recomputes: dict[str, list[float]] = {name: [] for name in engines}
    for turn in range(args.turns):
        for name, engine in engines.items():
            samples = store_ms(engine, users, now + turn * args.stores, args.stores)
            medians[name].append(statistics.median(samples))
            recomputes[name].append(recompute_us(engine, users, now))
    for name, engine in engines.items():
        with engine.connect() as conn:
            size, rows = db_partitions.heartbeat_bytes(conn)
            parts = len(db_partitions.select_partitions(conn))
        print(f"{name:>9}: {parts:3} partitions, store of one heartbeat median "
              f"{' / '.join(f'{m:.3f}' for m in medians[name])} ms, recompute "
              f"{' / '.join(f'{r:.0f}' for r in recomputes[name])} µs per user-day, "
              f"{size / rows:.0f} B per raw heartbeat "
              f"({rows:,} rows)")  # fmt: skip
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
