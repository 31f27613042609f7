"""The embedded default: real servers started by the project, with their own data directory and
ports (never the shared ones), reused across runs, stopped cleanly, with clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import free_port
from worker.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, embedded_servers

pytestmark = pytest.mark.slow


def postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def redis_answers(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        return False


def test_start_reuse_and_clean_stop(embedded_dir):
    pg_port, redis_port = free_port(), free_port()
    with embedded_servers(
        embedded_dir, postgres=True, redis_=True, pg_port=pg_port, redis_port=redis_port
    ) as lease:
        urls = lease.urls
        assert postgres_answers(urls["DATABASE_URL"]) and redis_answers(urls["REDIS_URL"])
        with psycopg.connect(urls["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        redis.Redis.from_url(urls["REDIS_URL"]).set("kept", "yes")
        version_file = embedded_dir / "postgres" / "data" / "PG_VERSION"
        initialised_at = version_file.stat().st_mtime_ns
    # stopped cleanly: nothing answers, no server process is left
    assert not postgres_answers(urls["DATABASE_URL"]) and not redis_answers(urls["REDIS_URL"])
    assert not (embedded_dir / "postgres" / "data" / "postmaster.pid").exists()
    assert not (embedded_dir / "redis" / "redis.pid").exists()

    # reused: same data directory, no second initdb, the data is still there
    with embedded_servers(
        embedded_dir, postgres=True, redis_=True, pg_port=pg_port, redis_port=redis_port
    ) as again:
        assert version_file.stat().st_mtime_ns == initialised_at
        with psycopg.connect(again.urls["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
        assert redis.Redis.from_url(again.urls["REDIS_URL"]).get("kept") == b"yes"
    assert not postgres_answers(again.urls["DATABASE_URL"])


def test_a_server_stays_up_while_another_process_holds_it(embedded_dir):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    url = server.acquire()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (embedded_dir / "redis" / "holders" / str(holder.pid)).touch()  # as if it had acquired it
        assert server.release() == [holder.pid], "another live holder: keep running"
        assert redis_answers(url)
    finally:
        holder.kill()
        holder.wait()
    server.acquire()
    assert server.release() == [], "the dead holder's lease does not count"
    assert not redis_answers(url)


def test_port_taken_is_a_clear_error(embedded_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for server in (
            EmbeddedPostgres(embedded_dir / "postgres", port),
            EmbeddedRedis(embedded_dir / "redis", port),
        ):
            with pytest.raises(EmbeddedError, match=f"port {port} on 127.0.0.1 is taken by another program"):
                server.acquire()


def test_unusable_data_dir_is_a_clear_error(embedded_dir):
    not_a_dir = embedded_dir / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(EmbeddedError, match=r"is not usable.*HBW_DATA_DIR"):
        EmbeddedRedis(not_a_dir / "redis", free_port()).acquire()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL under another account")
def test_data_dir_the_postgres_account_cannot_reach_is_a_clear_error(embedded_dir):
    private = embedded_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(EmbeddedError, match="runs as 'nobody', which cannot enter"):
        EmbeddedPostgres(private / "postgres", free_port()).acquire()


def hbw_env(**variables: str) -> dict[str, str]:
    """This environment without DATABASE_URL and REDIS_URL (so: embedded servers), plus `variables`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**clean, **variables}


def hbw(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=hbw_env(**env), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_cli_reports_embedded_problems_without_a_traceback(embedded_dir):
    file = embedded_dir / "a-file"
    file.write_text("")
    proc = hbw({"HBW_DATA_DIR": str(file)}, "db", "init")
    assert proc.returncode == 3
    assert "is not usable" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_on_a_bare_environment_twice_gives_the_same_totals(embedded_dir):
    env = {
        "HBW_DATA_DIR": str(embedded_dir),
        "HBW_EMBEDDED_PG_PORT": str(free_port()),
        "HBW_EMBEDDED_REDIS_PORT": str(free_port()),
        "HBW_THREADS": "4",
    }
    first = hbw(env, "demo")
    assert first.returncode == 0, first.stderr[-3000:]
    totals = [line for line in first.stdout.splitlines() if " of coding in " in line]
    assert [line.split(":")[0] for line in totals] == ["alice", "bob", "carol", "dave"]
    for phrase in ("project", "coding time", "top languages:", "editors:"):
        assert phrase in first.stdout
    second = hbw(env, "demo")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [line for line in second.stdout.splitlines() if " of coding in " in line] == totals
    # the servers were stopped after each run
    assert not (embedded_dir / "postgres" / "data" / "postmaster.pid").exists()
    assert not (embedded_dir / "redis" / "redis.pid").exists()


EXAMPLES = str(Path(__file__).parents[2] / "examples" / "heartbeats.jsonl")


def test_one_url_set_and_the_other_not_is_refused_unless_embedding_is_asked_for(embedded_dir, settings):
    env = {
        "HBW_DATA_DIR": str(embedded_dir),
        "HBW_EMBEDDED_PG_PORT": str(free_port()),
        "HBW_EMBEDDED_REDIS_PORT": str(free_port()),
    }
    database, redis_url = {"DATABASE_URL": settings.database_url}, {"REDIS_URL": settings.redis_url}
    for configured, command in ((database, ["enqueue", EXAMPLES]), (redis_url, ["db", "init"])):
        proc = hbw({**env, **configured}, *command)
        assert proc.returncode == 3, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        missing = "REDIS_URL" if configured is database else "DATABASE_URL"
        assert f"is set but {missing} is not" in line and f"{missing}=embedded" in line
    assert list(embedded_dir.iterdir()) == [], "no embedded server was started"

    # a command that needs only the configured server runs as before
    assert hbw({**env, **database}, "db", "init").returncode == 0
    # embedding asked for explicitly: a private Redis beside the configured database
    proc = hbw({**env, **database, "REDIS_URL": "embedded"}, "enqueue", EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    assert "enqueued: 8 heartbeats" in proc.stdout
    assert (embedded_dir / "redis" / "appendonly.aof").exists() and not (embedded_dir / "postgres").exists()
