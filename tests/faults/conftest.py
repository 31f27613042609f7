"""The fault-injection suite's own PostgreSQL and Redis (never the shared ones: it crashes them),
worker processes it can kill, and a tally of every fault it inflicted (docs/reliability.md).

Run it alone with `python -m pytest -m faults`; set HBW_FAULT_REPORT=path to keep the tally.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from db.schema import apply_schema
from jobs.locks import job_lock
from tests import reference, streams
from tests.conftest import free_port, truncate_all
from tests.tables import diff, snapshot
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.producer import EnqueueError, enqueue_heartbeats
from worker.runtime.broker import make_broker
from worker.runtime.messages import QUEUES
from worker.runtime.redis_keys import queues_empty
from worker.settings import Settings

#: Every fault inflicted in this session, for docs/reliability.md.
TALLY: Counter = Counter()

#: Fast failure detection, so the suite takes minutes, not hours (production defaults: docs/configuration.md).
FAST = {
    "HBW_WORKER_HEARTBEAT_TIMEOUT_MS": "3000",
    "HBW_MAINTENANCE_INTERVAL_MS": "500",
    "HBW_MIN_BACKOFF_MS": "100",
    "HBW_MAX_BACKOFF_MS": "2000",
    "HBW_MAX_RETRIES": "60",
    "HBW_RECOMPUTE_DELAY_MS": "300",
    "HBW_SWEEP_INTERVAL_S": "1",
    "HBW_SWEEP_MIN_AGE_S": "2",
    "HBW_SWEEP_STALE_AFTER_S": "20",
    "HBW_SHUTDOWN_TIMEOUT": "5",
    "HBW_LOG_FORMAT": "json",
    # No /metrics: a SIGKILLed supervisor would leave its multiprocess directory behind (the
    # session's leftover check fails on it), and sessions side by side would share port 9191.
    "HBW_METRICS_PORT": "0",
}


@dataclass
class FaultEnv:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    env: dict[str, str]
    settings: Settings
    engine: sa.Engine
    broker: object
    logs: Path

    def workers(
        self, *args: str, name: str = "workers", ready: int = 0, module: bool = False
    ) -> subprocess.Popen:
        """Start `hbw worker ARGS` (or `python ARGS` with `module`) in a process group of its own;
        with `ready`, wait until that many worker processes have started. ``proc.log`` is its log."""
        path = self.logs / f"{name}-{time.monotonic_ns()}.log"
        log = open(path, "w")  # noqa: SIM115 (lives with the process)
        command = [sys.executable, *args] if module else [sys.executable, "-m", "worker.cli", "worker", *args]
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, start_new_session=True)
        proc.log = path
        deadline = time.monotonic() + 60
        while path.read_text(errors="replace").count('"worker.started"') < ready:
            assert proc.poll() is None and time.monotonic() < deadline, path.read_text()[-3000:]
            time.sleep(0.1)
        return proc

    def deliver(self, items: list, rng: random.Random, *, pause: float = 0.0) -> None:
        """Enqueue in random batches; like a real ingest service, retry a batch the broker refused."""
        for batch in streams.random_batches(rng, items, high=300):
            while True:
                try:
                    enqueue_heartbeats(batch, batch_size=rng.randint(20, 200), broker=self.broker)
                    break
                except EnqueueError:
                    TALLY["producer retries (Redis down)"] += 1
                    time.sleep(0.2)
            TALLY["heartbeats delivered"] += len(batch)
            if pause:
                time.sleep(pause)

    def wait_drained(self, timeout: float = 240) -> None:
        deadline, calm = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            try:
                with self.engine.connect() as conn:
                    pending = conn.execute(
                        sa.text(
                            "SELECT (SELECT count(*) FROM stale_days) + (SELECT count(*) FROM derived_deltas)"
                        )
                    ).scalar_one()
                calm = calm + 1 if queues_empty(self.broker, QUEUES) and pending == 0 else 0
            except Exception:
                calm = 0
            if calm >= 3:
                return
            time.sleep(0.5)
        raise AssertionError(f"the queues did not drain in time\n{self.diagnose()}")

    def diagnose(self) -> str:
        """What is left, and what the workers said last (for a failing run)."""
        lines = []
        try:
            for key in sorted(self.broker.client.scan_iter(match="hbw-faults:*")):
                kind = self.broker.client.type(key).decode()
                size = {"hash": self.broker.client.hlen, "list": self.broker.client.llen,
                        "set": self.broker.client.scard, "zset": self.broker.client.zcard}[kind](key)  # fmt: skip
                lines.append(f"  {key.decode()} {kind} {size}")
            now_ms = time.time() * 1000
            for member, beat in self.broker.client.zrange(
                "hbw-faults:__heartbeats__", 0, -1, withscores=True
            ):
                lines.append(f"  worker {member.decode()} last beat {(now_ms - beat) / 1000:.1f} s ago")
            with self.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT job, count(*), min(created_at), count(failed_at) "
                                            "FROM derived_deltas GROUP BY job")).all()  # fmt: skip
                stale = conn.execute(sa.text("SELECT count(*), count(enqueued_at), count(failed_at) "
                                             "FROM stale_days")).one()  # fmt: skip
            lines += [f"  deltas {tuple(row)}" for row in rows] + [f"  stale days {tuple(stale)}"]
        except Exception as e:
            lines.append(f"  (could not inspect: {e})")
        for log in sorted(self.logs.glob("*.log")):
            tail = [
                line for line in log.read_text(errors="replace").splitlines() if '"message.done"' not in line
            ]
            lines.append(f"--- {log.name}")
            lines += tail[-25:]
        return "\n".join(lines)

    def dead_letters(self) -> int:
        return sum(self.broker.client.zcard(f"hbw-faults:{queue}.XQ") for queue in QUEUES)

    def assert_converged(self, stream: streams.Stream) -> None:
        expected = reference.compute(stream.valid)
        snap = snapshot(self.engine)
        assert self.dead_letters() == 0, "nothing should have been dead-lettered"
        assert diff(expected, snap) == []
        lost = len(expected.heartbeats - snap["heartbeats"])
        TALLY["heartbeats lost"] += lost
        TALLY["streams converged to the reference"] += 1
        assert lost == 0


class Blocker:
    """Holds the projects job's advisory lock for a user (a session lock: closing a pooled
    SQLAlchemy connection would not release it, so unlock explicitly)."""

    def __init__(self, engine, user: str) -> None:
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": job_lock("projects", user)})

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            self.conn.close()


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def group(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (Linux /proc): what a supervisor started, at any depth."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[3] == str(pgid) and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def children(pid: int) -> list[int]:
    """Live worker processes of supervisor `pid` (Linux /proc); not multiprocessing's
    resource_tracker, which spawn mode also starts."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] not in ("Z", "X") and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="session")
def fault_servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis, Path]]:
    root = Path(tempfile.mkdtemp(prefix="hbw-faults-"))  # in the session's directory (tests/conftest.py)
    root.chmod(0o755)
    postgres = EmbeddedPostgres(root / "postgres", free_port())
    redis_server = EmbeddedRedis(root / "redis", free_port(), fsync="always")
    postgres.start()
    redis_server.start()
    try:
        yield postgres, redis_server, root
    finally:
        postgres.stop()
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)
        summary = dict(sorted(TALLY.items()))
        print("\nfault-injection tally:", json.dumps(summary, indent=2))
        if os.environ.get("HBW_FAULT_REPORT"):
            Path(os.environ["HBW_FAULT_REPORT"]).write_text(json.dumps(summary, indent=2))


@pytest.fixture
def faults(fault_servers, tmp_path) -> Iterator[FaultEnv]:
    postgres, redis_server, _ = fault_servers
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HBW_")},
        **FAST,
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "HBW_REDIS_NAMESPACE": "hbw-faults",
    }
    settings = Settings(
        **{"DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url}, redis_namespace="hbw-faults"
    )
    engine = create_engine(postgres.url, pool_size=2)
    with engine.begin() as conn:
        apply_schema(conn)
        truncate_all(conn)
    broker = make_broker(settings)  # the producer's: a separate process's broker, not the session's
    broker.client.flushall()
    yield FaultEnv(postgres, redis_server, env, settings, engine, broker, tmp_path)
    engine.dispose()
