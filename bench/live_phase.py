"""One live phase of `python -m bench.live`: preload, live traffic, drain, idle, checks.

Derived lag is read engine-agnostically: a poller counts the probe users' heartbeats in the three
totals tables of SPEC (the smallest of the three sums, every ~100 ms, one query on a connection of
its own, whose backend's CPU is taken out of PostgreSQL's), and bench.pacing.match_lags matches
the counts to the sends. Drained means no message left and nothing pending (harness.wait_drained).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
import sqlalchemy as sa
from rich.console import Console

from bench import harness
from bench.live_traffic import Users, preload, produce
from bench.pacing import due_times, match_lags, percentile, plan_calls
from bench.procs import Workers, cpu_seconds_by_tree, hbw_command, machine_busy_seconds, server_pids
from worker.database import get_engine
from worker.runtime.broker import setup_broker
from worker.settings import Settings, get_settings

DATABASE = "hbw_live"
NAMESPACE = "hbw-live"
POLL_SECONDS = 0.1
#: A guess of the preload's pace (heartbeats/s) low enough for any design, to keep off midnight.
PRELOAD_PACE_GUESS = 10_000
KINDS = ("workers", "postgres", "redis")

PROBE_COUNTS = sa.text("""
    SELECT user_id, min(n)::bigint AS n, count(*) AS tables FROM (
        SELECT user_id, sum(heartbeat_count) AS n FROM projects WHERE user_id = ANY(:ids) GROUP BY 1
        UNION ALL
        SELECT user_id, sum(heartbeat_count) FROM project_languages WHERE user_id = ANY(:ids) GROUP BY 1
        UNION ALL
        SELECT user_id, sum(heartbeat_count) FROM user_agents WHERE user_id = ANY(:ids) GROUP BY 1
    ) per_table GROUP BY user_id""")


@dataclass(frozen=True)
class LiveSizes:
    users: int
    seconds: float
    period: float
    probes: int


class Meter:
    """CPU seconds so far of the workers', PostgreSQL's and Redis's process trees, of the probe
    connection's backend, of this process and of the whole machine (for the noise beside us)."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.roots: dict[str, int] = dict(servers)
        self.probe: int | None = None

    def read(self) -> dict[str, float]:
        used = cpu_seconds_by_tree({**self.roots, **({"probe": self.probe} if self.probe else {})})
        used.update(bench=time.process_time(), machine=machine_busy_seconds(), at=time.monotonic())
        return used

    def spent(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
        """Seconds by kind (None: not measurable here), PostgreSQL without the probe's backend."""
        out: dict[str, float | None] = {k: after[k] - before[k] if k in after else None for k in KINDS}
        if out["postgres"] is not None and "probe" in after:
            out["postgres"] -= after["probe"] - before.get("probe", after["probe"])
        measured = sum(v for v in out.values() if v is not None)
        out["others"] = after["machine"] - before["machine"] - measured - (after["bench"] - before["bench"])
        out["wall"] = after["at"] - before["at"]
        return out

    def per_heartbeat(self, before, after, n: int, producer: float) -> dict[str, float | None]:
        """µs of CPU per heartbeat by kind; total = workers + PostgreSQL + Redis (the issue's)."""
        spent = self.spent(before, after)
        us = {k: None if spent[k] is None else spent[k] / n * 1e6 for k in KINDS}
        us["producer"] = producer / n * 1e6
        us["total"] = sum(v or 0.0 for k, v in us.items() if k in KINDS)
        us["total_with_producer"] = us["total"] + us["producer"]
        return us

    def cores(self, before, after) -> dict[str, float]:
        spent = self.spent(before, after)
        return {
            "ours": sum(spent[k] or 0.0 for k in KINDS) / spent["wall"],
            "others": spent["others"] / spent["wall"],
        }


def fresh_environment(console: Console):
    """A recreated database and an empty namespace; (settings, env, engine, broker, meter)."""
    env = harness.bench_environment(get_settings(), DATABASE, NAMESPACE)
    settings = get_settings()
    engine = get_engine(settings.database_url, pool_size=4)
    broker = setup_broker(settings)
    harness.purge(broker.client, NAMESPACE)
    meter = Meter(server_pids(engine, broker))
    for kind in ("postgres", "redis"):
        if kind not in meter.roots:
            console.print(f"[yellow]warning:[/] {kind} does not run on this machine: its CPU is not measured")
    return settings, env, engine, broker, meter


def other_sessions(engine: sa.Engine) -> int:
    """Client sessions on the server other than ours: their CPU would count as PostgreSQL's."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND datname IS DISTINCT FROM current_database()"
            )
        ).scalar_one()


class Poller(threading.Thread):
    """The probe users' counts every POLL_SECONDS: (issued, returned, counts) in `polls`."""

    def __init__(self, engine: sa.Engine, users: list[str]) -> None:
        super().__init__(daemon=True)
        self.engine, self.users = engine, users
        self.polls: list[tuple[float, float, dict[str, int]]] = []
        self.halt = threading.Event()
        self.error: str | None = None

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(PROBE_COUNTS, {"ids": self.users}).all()
        return {row.user_id: int(row.n) if row.tables == 3 else 0 for row in rows}

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                issued = time.monotonic()
                counts = self.counts()
                self.polls.append((issued, time.monotonic(), counts))
                self.halt.wait(max(0.0, issued + POLL_SECONDS - time.monotonic()))
        except Exception as e:  # reported as lost lags and in the results
            self.error = f"{type(e).__name__}: {e}"


def day_start_with_room(sizes: LiveSizes, d: int, console: Console) -> float:
    """Today's UTC midnight (epoch seconds), after waiting for the next day if the preload and the
    live minutes might not fit before midnight: both must fall on one UTC day."""
    now = time.time()
    midnight = (now // 86400 + 1) * 86400
    if now + sizes.users * d / PRELOAD_PACE_GUESS + sizes.seconds + 120 > midnight:
        wait = midnight + 60 - now
        console.print(f"waiting {wait / 60:.0f} min for the next UTC day (preload and live share a day)")
        time.sleep(wait)
    return time.time() // 86400 * 86400


def live_phase(sizes: LiveSizes, d: int, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    day_start = day_start_with_room(sizes, d, console)
    settings, env, engine, broker, meter = fresh_environment(console)
    users, rng = Users(sizes.users, args.seed), random.Random(args.seed)
    probes = users.ids[: sizes.probes]
    calls = plan_calls(due_times(sizes.users, sizes.period, sizes.seconds, rng), rng)
    result: dict[str, Any] = {"days_heartbeats": d, "users": sizes.users, "period": sizes.period}
    checks: dict[str, bool] = {}
    with Workers(hbw_command("worker"), env, expect=settings.processes) as workers:
        meter.roots["workers"] = workers.proc.pid
        result["preload"] = preload_day(users, d, day_start, sizes.period, engine, broker, settings, console)
        others = other_sessions(engine)
        probe_engine = sa.create_engine(settings.database_url, pool_size=1, max_overflow=0)
        poller = Poller(probe_engine, probes)
        base = poller.counts()
        checks["preloaded day derived for every probe user"] = all(base.get(u) == d for u in probes)
        with probe_engine.connect() as conn:
            meter.probe = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        poller.start()
        with harness.progress(console) as progress:
            task = progress.add_task(f"D={d}: live", total=sum(len(c.due) for c in calls))
            start = meter.read()
            produced = produce(calls, users, sizes.probes, broker, settings.batch_size,
                               lambda n: progress.advance(task, n))  # fmt: skip
            stopped, stopped_wall = meter.read(), time.time()
            progress.update(task, description=f"D={d}: draining")
            drained = harness.wait_drained(probe_engine, broker, timeout=args.drain_timeout)
        drained_at = meter.read()
        time.sleep(3 * POLL_SECONDS)  # a poll issued after the drain
        poller.halt.set()
        poller.join()
        console.print(f"D={d}: idle for {args.idle_seconds:g} s ...")
        idle_from = meter.read()
        time.sleep(args.idle_seconds)
        idle_to = meter.read()
        final = poller.counts()
        with probe_engine.connect() as conn:
            probe_unchanged = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == meter.probe
            total = conn.execute(sa.text("SELECT sum(heartbeat_count) FROM projects")).scalar_one()
        result["other_postgres_sessions"] = max(others, other_sessions(engine))
    probe_engine.dispose()
    engine.dispose()

    lags = match_lags(produced.sends, {u: base.get(u, 0) for u in probes}, poller.polls)
    sent_by_probe = {u: len(times) for u, times in produced.sends.items()}
    result["live"] = produced.summary() | {"target_per_s": sizes.users / sizes.period}
    result["cpu_us"] = meter.per_heartbeat(start, drained_at, produced.sent, produced.cpu_seconds)
    result["idle_cores"] = meter.cores(idle_from, idle_to)
    # what the idle workers and servers would have cost anyway over the same time, per heartbeat
    result["cpu_us"]["idle_share"] = (
        result["idle_cores"]["ours"] * (drained_at["at"] - start["at"]) / (max(produced.sent, 1) / 1e6)
    )
    result["busy_cores"] = meter.cores(start, stopped)
    result["producer_cores"] = produced.cpu_seconds / produced.seconds
    result["lag_s"] = {
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": percentile(lags, 100),
        "probe_heartbeats": len(lags),
        "never_reflected": sum(1 for lag in lags if lag == float("inf")),
        "poller_error": poller.error,
    }
    result["drain_s"] = drained_at["at"] - stopped["at"]
    result["worker_rss_mb"] = max(workers.peak_kib.values(), default=0) / 1024
    result["servers"] = {k: v for k, v in meter.roots.items() if k != "workers"}
    result["warnings"] = [
        text
        for bad, text in (
            (stopped_wall >= day_start + 86400, "the live minutes ended on another UTC day than the preload"),
            (not probe_unchanged, "the probe connection reconnected: its CPU is not taken out exactly"),
            (result["other_postgres_sessions"] > 0, "PostgreSQL served others too: its CPU counts theirs"),
        )
        if bad
    ]
    checks.update({
        "every heartbeat accepted": produced.rejected == 0,
        f"drained within {args.drain_timeout:g} s": drained,
        "probe users' derived counts equal what was sent": all(
            final.get(u) == base.get(u, -1) + sent_by_probe[u] for u in probes
        ),
        "every user's heartbeats counted in projects": total == sizes.users * d + produced.sent,
    })  # fmt: skip
    if args.verify:
        started = time.monotonic()
        checks["`hbw verify` of the day: no drift"] = verify(day_start, env, console)
        result["verify_s"] = time.monotonic() - started
    result["checks"] = checks
    return result


def preload_day(
    users: Users,
    d: int,
    day_start: float,
    period: float,
    engine: sa.Engine,
    broker: dramatiq.Broker,
    settings: Settings,
    console: Console,
) -> dict[str, float]:
    """Every user's day of d heartbeats up to now, through the running workers, drained; then a
    VACUUM ANALYZE, so the preload's autovacuum does not land in the live minutes."""
    end = time.time() - 1
    spacing = min(period, (end - day_start) / (d + 1))
    with harness.progress(console) as progress:
        task = progress.add_task(f"D={d}: preload", total=users.count * d)
        started = time.monotonic()
        preload(users, d, end, spacing, broker, settings.batch_size, lambda n: progress.advance(task, n))
        progress.update(task, description=f"D={d}: preload, draining")
        harness.wait_drained(engine, broker)
    drained = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    return {"seconds": drained - started, "vacuum_s": time.monotonic() - drained, "spacing_s": spacing}


def verify(day_start: float, env: dict[str, str], console: Console) -> bool:
    """`hbw verify` of the day: the derived rows equal a full recompute from the raw heartbeats."""
    day = dt.datetime.fromtimestamp(day_start, dt.UTC).date().isoformat()
    console.print(f"hbw verify --date {day} ...")
    done = subprocess.run([*hbw_command("verify"), "--date", day], env=env, capture_output=True, text=True)
    if done.returncode:
        console.print(done.stdout[-2000:] + done.stderr[-2000:])
    return done.returncode == 0
