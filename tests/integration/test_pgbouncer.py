"""Behind PgBouncer in transaction pooling mode (Debian's 1.18, started here): the time zone holds
on every server connection, a run's lock excludes a second run, and a stream processed, verified
and reprocessed through it equals the reference (issue #19, item 3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import runs as db_runs
from db.engine import create_engine
from jobs.keys import create_key
from jobs.runs import _lock_key
from tests import reference, services, streams
from tests.conftest import free_port, worker_process
from tests.integration.test_cli import hbw
from tests.tables import diff, snapshot
from tests.web_client import basic, call, serve
from worker import cli
from worker.http.app import create_app
from worker.producer import enqueue_heartbeats

pytestmark = [pytest.mark.slow, pytest.mark.pgbouncer]
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture(scope="module")
def bouncer(database_url) -> Iterator[str]:
    """PgBouncer in transaction mode in front of the test server, 2 server connections per
    database (so clients share them); its URL without a database name."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    server = sa.make_url(services.sqlalchemy_url(database_url))
    home = Path(tempfile.mkdtemp(prefix="hbw-pgbouncer-"))  # (pytest's are not the postgres user's to read)
    home.chmod(0o755)
    port = free_port()
    (home / "users.txt").write_text(f'"{server.username}" ""\n')
    (home / "pgbouncer.ini").write_text(f"""
[databases]
* = host={server.host} port={server.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
""")
    user = ["-u", "postgres"] if os.geteuid() == 0 else []  # it refuses to run as root
    log = open(home / "pgbouncer.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([PGBOUNCER, *user, str(home / "pgbouncer.ini")], stderr=log)
    url = f"postgresql://{server.username}@127.0.0.1:{port}"
    for _ in range(100):
        try:
            with create_engine(f"{url}/{server.database}", pool_size=1).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            break
        except sa.exc.OperationalError:
            if process.poll() is not None:
                pytest.fail(f"pgbouncer exited: {(home / 'pgbouncer.log').read_text()}")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)
    log.close()
    shutil.rmtree(home)


@pytest.fixture
def pooled(bouncer, database_url) -> str:
    """The session's test database through PgBouncer."""
    return f"{bouncer}/{sa.make_url(services.sqlalchemy_url(database_url)).database}"


@pytest.fixture
def other_zone_database(server_urls, bouncer):
    """A database whose sessions start in Asia/Kolkata."""
    admin = create_engine(server_urls.database, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    name = f"hbw_bouncer_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kolkata'"))
    yield f"{bouncer}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_sessions_stay_in_utc_on_whichever_server_connection_serves_them(other_zone_database):
    """PgBouncer refuses a startup `options`; the engine sets the zone instead, and PgBouncer puts
    it back on each server connection it hands our clients, while others change theirs."""
    ours = create_engine(f"{other_zone_database}?pgbouncer=true", pool_size=8)
    theirs = create_engine(f"{other_zone_database}?pgbouncer=true", pool_size=8)
    seen, errors = [], []

    def client(engine: sa.Engine, zone: str | None) -> None:
        try:
            with engine.connect() as conn:
                for _ in range(20):
                    if zone:
                        conn.execute(sa.text(f"SET TIME ZONE '{zone}'"))
                    seen.append((zone, conn.execute(sa.text("SHOW timezone")).scalar_one()))
                    conn.commit()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(ours, None)) for _ in range(6)]
    threads += [threading.Thread(target=client, args=(theirs, "America/Havana")) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert {zone for want, zone in seen if want is None} == {"UTC"}
    assert {zone for want, zone in seen if want} == {"America/Havana"}
    with create_engine(other_zone_database, pool_size=1).connect() as conn:
        raw = conn.connection.driver_connection
        raw.autocommit = True
        assert raw.execute("SELECT current_setting('timezone')").fetchone() == ("UTC",)
    ours.dispose()
    theirs.dispose()


def test_a_runs_lock_holds_through_the_pooler(pooled):
    """A session-level advisory lock through the pooler is taken twice (the trap: the second
    client lands on the same server connection); a run's lock, held by an open transaction, is
    not, and is free again once that transaction ends."""
    engine, key = create_engine(f"{pooled}?pgbouncer=true", pool_size=4), _lock_key("reprocess:2024-01-01")
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as a, autocommit.connect() as b:
        assert a.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        assert b.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        b.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    with engine.connect() as holder:
        assert db_runs.try_lock_run(holder, key)
        for _ in range(5):
            with engine.connect() as other:
                assert not db_runs.try_lock_run(other, key)
        holder.rollback()
        with engine.connect() as other:
            assert db_runs.try_lock_run(other, key)
    engine.dispose()


@pytest.mark.parametrize("flag", ["", "?pgbouncer=true"])
def test_prepared_statements_are_not_made_behind_the_pooler(pooled, flag):
    """psycopg prepares a statement on a server connection at its fifth run; PgBouncer 1.18 sends
    the next run wherever it likes. With ?pgbouncer=true nothing is prepared."""
    engine = create_engine(f"{pooled}{flag}", pool_size=2)
    statement = sa.text("SELECT count(*) FROM heartbeats WHERE user_id = :u")

    def run_it_again() -> None:
        with engine.connect() as a, engine.connect() as b:
            for _ in range(6):  # prepared on server connection 1
                a.execute(statement, {"u": "x"})
                a.commit()
            b.execute(sa.text("SELECT 1"))  # b's transaction takes server connection 1 ...
            a.execute(statement, {"u": "x"})  # ... so a's next run lands on the other one

    if flag:
        run_it_again()
    else:
        with pytest.raises(sa.exc.ProgrammingError, match="prepared statement"):
            run_it_again()
    engine.dispose()


def test_a_stream_processed_verified_and_backfilled_through_the_pooler(
    db, settings, broker, pooled, monkeypatch, capsys
):
    url = f"{pooled}?pgbouncer=true"
    pooled = settings.model_copy(update={"database_url": url})
    monkeypatch.setenv("DATABASE_URL", url)
    assert cli.main(["db", "init"]) == 0
    stream = streams.generate(seed=19, users=6, days=3, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=200, broker=broker)
    drained = hbw("worker", "--burst", "-p", "1", env={"DATABASE_URL": url})
    assert drained.returncode == 0, drained.stderr.decode()[-3000:]
    expected = reference.compute(stream.valid)
    assert diff(expected, snapshot(db)) == []
    assert cli.main(["verify"]) == 0, capsys.readouterr().out
    with db.begin() as conn:  # drift for the backfill to repair
        conn.execute(sa.text("UPDATE project_days SET coding_us = coding_us + 1"))
    assert cli.main(["verify"]) == 1
    first, last = stream.first_day.isoformat(), stream.last_day.isoformat()
    with worker_process(url):
        command = ["backfill", "--since", first, "--until", last, "--force", "--timeout", "120"]
        assert cli.main(command) == 0, capsys.readouterr().out
    assert cli.main(["verify"]) == 0, capsys.readouterr().out
    assert diff(expected, snapshot(db)) == []

    user_id, _ = max(expected.projects, key=lambda key: expected.projects[key].seconds)
    with db.begin() as conn:
        auth = basic(create_key(conn, user_id))
    total = sum(t.seconds for (u, *_), t in expected.activity_days.items() if u == user_id)
    for web in serve(create_app(pooled, broker=broker), pooled):  # hbw serve's reads too
        for _ in range(8):  # (past psycopg's fifth run of the same statement)
            status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/all_time", headers=auth)
            assert status == 200, body
            assert body["data"]["total_seconds_including_other_language"] == pytest.approx(total, abs=1e-6)
