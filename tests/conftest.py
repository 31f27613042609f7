"""Shared fixtures.

Integration tests talk to a real PostgreSQL and a real Redis: the servers named by
DATABASE_URL / REDIS_URL when they are set and reachable, else the embedded ones (see
tests/services.py). Each test session creates its own database on that server (schema.sql
applied once, tables truncated between tests) and its own Redis key namespace, so it never
touches anybody's data and two sessions can run side by side.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
import sqlalchemy as sa

from db.engine import create_engine
from db.schema import apply_schema
from tests import services
from tests.leftovers import PYTEST_DIRS, leftovers
from worker.logs import configure_logging
from worker.settings import Settings, get_settings

#: Every table schema.sql makes but the version record: emptied between tests, so a new table is
#: never forgotten here.
ALL_TABLES = (
    "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
    "WHERE schemaname = current_schema() AND tablename <> 'hbw_schema'"
)


def truncate_all(conn: sa.Connection) -> None:
    conn.execute(sa.text(f"TRUNCATE {conn.execute(sa.text(ALL_TABLES)).scalar_one()}"))


#: Threads a Dramatiq worker of ours starts (worker.runtime.middleware, worker.runtime.outbox, worker.runtime.supervisor,
#: worker.runtime.doorbell).
OUR_THREADS = ("worker-heartbeat", "orphan-sweeper", "parent-watch", "doorbell", "outbox-vacuum")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The session's own temporary directory, checked when the session ends: no test may leave a
    process or a temporary file behind (tests/leftovers.py says what counts). Whatever the tests,
    and the processes they start (TMPDIR), put in temporary files lands there, apart from the
    sessions that run beside this one. It is removed at the end, but for pytest's tmp_path
    directories when a test failed (to look into)."""
    base = Path(tempfile.mkdtemp(prefix="hbw-pytest-", dir="/tmp"))
    base.chmod(0o755)  # a root run starts PostgreSQL as 'nobody', which must reach its directories
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(base)
    yield base
    tempfile.tempdir = saved[1]
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]
    found = leftovers(base)
    # and no thread of ours still at work in this process (a worker's beat would make a stopped
    # worker look alive to every later test)
    found += [f"thread {t.name} still running" for t in threading.enumerate() if t.name in OUR_THREADS]
    for path in base.iterdir():
        if path.name.startswith(PYTEST_DIRS):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if not request.session.testsfailed:
        shutil.rmtree(base, ignore_errors=True)
    if found:
        pytest.fail("this session's tests left behind:\n  " + "\n  ".join(found), pytrace=False)


@pytest.fixture(scope="session")
def server_urls() -> Iterator[services.ServerUrls]:
    with services.server_urls() as urls:
        yield urls


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database `prefix_<random>` on the server of `server_url`: its URL, dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(services.sqlalchemy_url(server_url)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False).replace("postgresql+psycopg://", "postgresql://")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(server_urls: services.ServerUrls) -> Iterator[str]:
    with scratch_database(server_urls.database, "hbw_test") as url:
        engine = create_engine(url, pool_size=1)
        with engine.begin() as conn:
            apply_schema(conn)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def redis_namespace() -> str:
    return f"hbw-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def settings(database_url: str, server_urls: services.ServerUrls, redis_namespace: str) -> Iterator[Settings]:
    """The environment every process of the test session sees (workers started as subprocesses too)."""
    env = {
        "DATABASE_URL": database_url,  # (subprocesses started by tests inherit these)
        "REDIS_URL": server_urls.redis,
        "HBW_REDIS_NAMESPACE": redis_namespace,
        "HBW_LOG_FORMAT": "json",
        "HBW_MIN_BACKOFF_MS": "100",
        "HBW_SHUTDOWN_TIMEOUT": "10",
        "HBW_RECOMPUTE_DELAY_MS": "200",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    configure_logging("json", "INFO")  # as every entry point does: logs on stderr, never stdout
    yield get_settings()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def broker(settings: Settings):
    """The Dramatiq broker, installed globally before the actors are imported (as in production)."""
    from worker.runtime.broker import setup_broker

    broker = setup_broker(settings)
    yield broker
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = create_engine(settings.database_url, pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: sa.Engine, broker, settings: Settings) -> sa.Engine:
    """A clean database and clean queues for this test."""
    with engine.begin() as conn:
        truncate_all(conn)
    client = broker.client
    keys = list(client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    return engine


def drain(settings: Settings, *, threads: int = 4, timeout: float = 180) -> None:
    """Run a worker in this process until every queue is drained (`hbw worker --burst`); fail,
    instead of hanging, when it does not drain within `timeout` seconds."""
    from worker.runtime.runner import run_worker

    stop, codes = threading.Event(), []

    def run() -> None:
        codes.append(run_worker(settings, threads=threads, burst=True, handle_signals=False, poll_interval=0.05,
                                stop=stop))  # fmt: skip

    worker = threading.Thread(target=run, name="drain")
    worker.start()
    worker.join(timeout)
    drained = not worker.is_alive()
    stop.set()
    worker.join(60)
    assert drained, f"the queues did not drain within {timeout:g}s: some message failed or wedged a worker"
    assert codes == [0]


@contextlib.contextmanager
def worker_process(database_url: str, *, timeout: float = 60, env: dict | None = None) -> Iterator[None]:
    """`hbw worker` running in a process of its own on another database URL, or with `env` (this
    process's actors keep the session's settings: setup_broker declares them once), stopped with
    SIGTERM as a deployment stops it."""
    command = [sys.executable, "-m", "worker.cli", "worker", "-p", "1", "-t", "4"]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, env={**os.environ, "DATABASE_URL": database_url, **(env or {})}, stdout=log, stderr=log
        )
        try:
            yield
            process.terminate()
            assert process.wait(timeout) == 0, log.seek(0) or log.read()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def with_actors(other):
    """A broker standing for another worker process's: with the actors that process's
    setup_broker would declare (a consumer dead-letters messages for actors it does not know)."""
    for actor in dramatiq.get_broker().actors.values():
        other.declare_actor(actor)
    return other


@pytest.fixture
def log_events():
    """The JSON log lines production would write during the test, as dicts."""
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    configure_logging("json", "INFO")


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data directory for embedded servers of a test's own, in the session's directory with mode
    755, because a root test run starts PostgreSQL as 'nobody', which must be able to reach it."""
    path = Path(tempfile.mkdtemp(prefix="hbw-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
