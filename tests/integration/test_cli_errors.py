"""Every command, pointed at a database without the schema, a database that does not exist, a
closed PostgreSQL port, a closed Redis port or a malformed URL, says what is wrong and what to do
in one line, with the exit code docs/cli.md documents, never a traceback and never a password."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from jobs.heartbeat import validate_heartbeat
from jobs.store import store_heartbeats
from worker.cli import main

PASSWORD = "s3cret-pw"

#: Commands that need PostgreSQL ("db init" creates the schema, so not where it is missing).
POSTGRES_COMMANDS = [
    ["status"],
    ["verify"],
    ["keys", "list", "alice"],
    ["alias", "list", "alice"],
    ["project", "list", "alice"],
    ["reprocess", "--yesterday"],
    ["backfill"],
    ["prune", "--before", "2024-01-01"],
    ["worker", "--burst"],
    ["health"],
    ["db", "init"],
]
#: Commands that need Redis.
REDIS_COMMANDS = [
    ["enqueue", "heartbeats.jsonl"],
    ["dlq", "list"],
    ["dlq", "retry", "--all"],
    ["status"],
    ["reprocess", "--yesterday"],
    ["backfill"],
    ["worker", "--burst"],
    ["health"],
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def with_database(url: str, name: str, password: str | None = None) -> str:
    parsed = sa.make_url(url).set(database=name)
    if password:
        parsed = parsed.set(password=password)
    return parsed.render_as_string(hide_password=False)


def run(command: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "HBW_STARTUP_TIMEOUT": "0",
        "HBW_METRICS_PORT": "0",
        "HBW_PROCESSES": "2",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *command], capture_output=True, text=True, env=environment,
        cwd=cwd, timeout=120,
    )  # fmt: skip


@pytest.fixture
def empty_database(settings, server_urls):
    name = f"hbw_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_urls.database, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield with_database(settings.database_url, name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_every_command_says_in_one_line_what_is_wrong_and_what_to_do(db, settings, empty_database, tmp_path):
    (tmp_path / "heartbeats.jsonl").write_text(
        json.dumps({"user_id": "alice", "entity": "e", "time": time.time()})
    )
    with db.begin() as conn:  # a user-day to reprocess or backfill, so they need Redis
        store_heartbeats(
            conn,
            [validate_heartbeat({"user_id": "alice", "entity": "e", "time": time.time() - 86_400})],
            timeout_us=900_000_000,
        )
    redis_down = f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0"
    situations = {
        # situation: (environment, commands, exit code, what the line must say)
        "no schema": ({"DATABASE_URL": empty_database}, POSTGRES_COMMANDS[:-1], 3, "run `hbw db init`"),
        "no database": (
            {"DATABASE_URL": with_database(settings.database_url, "hbw_missing_db", PASSWORD)},
            POSTGRES_COMMANDS, 3, 'has no database "hbw_missing_db": create it (createdb) or fix DATABASE_URL',
        ),
        "postgres down": (
            {"DATABASE_URL": f"postgresql://hbw:{PASSWORD}@127.0.0.1:{closed_port()}/hbw"},
            POSTGRES_COMMANDS, 1, "(connection refused): is it running? check DATABASE_URL",
        ),
        "redis down": ({"REDIS_URL": redis_down}, REDIS_COMMANDS, 1,
                       "(connection refused): is it running? check REDIS_URL"),
        "bad database url": ({"DATABASE_URL": f"mysql://root:{PASSWORD}@db/hbw"}, POSTGRES_COMMANDS, 3,
                             "DATABASE_URL is not a PostgreSQL URL"),
        "bad redis url": ({"REDIS_URL": f"http://:{PASSWORD}@cache:6379"}, REDIS_COMMANDS, 3,
                          "REDIS_URL is not a Redis URL"),
    }  # fmt: skip
    runs = [
        (situation, command, env, code, fix)
        for situation, (env, commands, code, fix) in situations.items()
        for command in commands
    ]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda r: run(r[1], r[2], tmp_path), runs))

    failures = []
    for (situation, command, _env, code, fix), proc in zip(runs, procs, strict=True):
        output = proc.stdout + proc.stderr
        lines = proc.stderr.splitlines()
        problem = None
        if "Traceback" in output or PASSWORD in output:
            problem = "a traceback or the password"
        elif command == ["health"] and "URL is not" not in fix:
            # one line per check on stdout; the failing one names the fix
            if (
                proc.returncode != 1
                or proc.stderr
                or not any(line.startswith("FAIL") and fix in line for line in proc.stdout.splitlines())
            ):
                problem = "no FAIL line naming the fix, or not exit 1"
        elif proc.returncode != code:
            problem = f"exit {proc.returncode}, not {code}"
        elif len(lines) != 1 or not lines[0].startswith("hbw: ") or fix not in lines[0]:
            problem = "not one line naming the fix"
        if problem:
            failures.append(f"{situation}: hbw {' '.join(command)}: {problem}\n{output[-1500:]}")
    assert not failures, f"{len(failures)} of {len(runs)} runs:\n\n" + "\n\n".join(failures)


def test_an_unexpected_error_is_one_line_and_tracebacks_go_to_the_debug_log(settings, monkeypatch, capsys):
    def boom(args, settings):
        raise KeyError(f"postgresql://alice:{PASSWORD}@db/hbw")

    monkeypatch.setattr("worker.cli.history.verify", boom)
    assert main(["verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hbw: unexpected error: KeyError: ") and err.count("\n") == 1
    assert PASSWORD not in err and "alice:***@db" in err and "HBW_LOG_LEVEL=DEBUG" in err

    proc = run(["verify", "--user", "x"], {"HBW_LOG_LEVEL": "DEBUG",
                                             "DATABASE_URL": f"postgresql://a:{PASSWORD}@127.0.0.1:{closed_port()}/x"},
               None)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "command.failed" in proc.stderr


def test_a_bad_setting_is_one_line_naming_the_variable(settings):
    proc = run(["status"], {"HBW_BATCH_SIZE": "0"}, None)
    assert proc.returncode == 3
    assert (
        proc.stderr
        == "hbw: configuration error: HBW_BATCH_SIZE: Input should be greater than or equal to 1\n"
    )


def test_interrupted_or_a_closed_pipe_is_no_traceback_either(settings, monkeypatch, capsys):
    def interrupted(args, settings):
        raise KeyboardInterrupt

    monkeypatch.setattr("worker.cli.history.verify", interrupted)
    assert main(["verify"]) == 130
    assert capsys.readouterr().err == "hbw: interrupted\n"

    reader, writer = os.pipe()
    os.close(reader)  # `hbw dlq list | head -0`: nobody reads what it prints
    try:
        proc = subprocess.run([sys.executable, "-m", "worker.cli", "dlq", "list"], stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=60)  # fmt: skip
    finally:
        os.close(writer)
    assert (proc.returncode, proc.stderr) == (1, "")
