"""`hbw` as a user and a script see it: outputs, exit codes, help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats

NOW = time.time()


def hbw(*args: str, env: dict | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def write_lines(path, items) -> None:
    with open(path, "wb") as f:
        for item in items:
            f.write(item if isinstance(item, bytes) else json.dumps(item).encode())
            f.write(b"\n")


def test_enqueue_all_valid_exits_0(db, settings, broker, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    write_lines(path, [{"user_id": "u", "entity": f"e{i}", "time": NOW - i} for i in range(5)])
    assert cli.main(["enqueue", str(path), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "accepted: 5" in out and "rejected: 0" in out and "enqueued: 5 heartbeats in 3 message(s)" in out


def test_every_kind_of_bad_input_is_rejected_and_every_valid_item_stored(
    db, settings, broker, tmp_path, capsys
):
    stream = streams.generate(seed=5, users=2, days=2, invalid_share=0.0)
    lines = [
        *stream.items,
        b"this is not json",
        b'{"user_id": "u", "entity": "\x00", "time": 1}',
        b"\xff{",
        b'{"user_id": "u", "entity": "x", "time": 1700000000, ',
    ]
    path = tmp_path / "in.jsonl"
    write_lines(path, lines)

    assert cli.main(["enqueue", str(path), "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    invalid = {
        i for i, item in enumerate(lines) if isinstance(item, bytes) or any(item is b for b in stream.invalid)
    }
    assert {r["index"] for r in result["rejected"]} == invalid
    assert result["accepted"] == result["enqueued"] == len(stream.valid)
    reasons = " | ".join(r["reason"] for r in result["rejected"])
    for expected in (
        "not valid JSON",
        "NUL",
        "not valid UTF-8",
        "entity: String should have at most 4096",
        "time: Input should be a valid number (got string)",
        "must be a JSON object",
        "category",
        "type",
        "is required",
        "2000-01-01",
        "1 hour in the future",
    ):
        assert expected in reasons, expected

    drain(settings)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []


def test_human_output_lists_each_rejection(db, settings, broker, tmp_path, capsys):
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"user_id": "u", "entity": "e", "time": NOW}, {"user_id": "u", "time": NOW}]))
    assert cli.main(["enqueue", str(path)]) == 2
    assert "  item 1: entity: is required" in capsys.readouterr().out


def test_enqueue_from_stdin(db, settings, broker):
    proc = hbw(
        "enqueue", "-", "--json", stdin=json.dumps({"user_id": "u", "entity": "e", "time": NOW}).encode()
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["enqueued"] == 1


def test_enqueue_when_redis_is_down_exits_1_and_says_how_many_were_enqueued(tmp_path):
    path = tmp_path / "in.jsonl"
    write_lines(path, [{"user_id": "u", "entity": "e", "time": NOW}])
    proc = hbw("enqueue", str(path), "--json", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["enqueued"] == 0 and "0 of 1 valid heartbeats were enqueued" in result["error"]


def test_missing_file_is_a_clear_error(settings, tmp_path):
    proc = hbw("enqueue", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 3
    assert b"cannot read" in proc.stderr and b"Traceback" not in proc.stderr


def test_db_init_is_idempotent(settings):
    assert hbw("db", "init").returncode == 0
    proc = hbw("db", "init")
    assert proc.returncode == 0 and b"schema version" in proc.stdout


def test_worker_refuses_to_start_without_schema(settings, server_urls):
    name = f"hbw_empty_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_urls.database, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sa.make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
        proc = hbw("worker", "--burst", env={"DATABASE_URL": url})
        assert proc.returncode == 3
        assert b"run `hbw db init`" in proc.stderr and b"Traceback" not in proc.stderr
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reprocess", "--since", "2024-02-01", "--until", "2024-01-01"], "is before --since"),
        (["reprocess", "--date", "2024-01-01", "--until", "2024-01-02"], "--until goes with --since"),
    ],
)
def test_reprocess_argument_errors(settings, args, message, capsys):
    assert cli.main(args) == 2  # bad usage, like argparse's own errors
    assert message in capsys.readouterr().err


def stored_day(broker, settings, at: float) -> str:
    enqueue_heartbeats(
        [{"user_id": "u", "entity": "e", "time": at, "project": "p"}], batch_size=10, broker=broker
    )
    drain(settings)
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def test_reprocess_wait_returns_once_the_workers_are_done(db, settings, broker, capsys):
    day = stored_day(broker, settings, NOW - 86_400)
    worker = threading.Thread(target=drain, args=(settings,))
    worker.start()  # drains whatever the reprocess below enqueues
    try:
        assert cli.main(["reprocess", "--date", day, "--wait", "--timeout", "60"]) == 0
    finally:
        worker.join()
    assert f"reprocess:{day}: done, 1 user-day(s) recomputed" in capsys.readouterr().out


def test_reprocess_wait_times_out_without_workers(db, settings, broker, capsys):
    day = stored_day(broker, settings, NOW - 60)
    assert cli.main(["reprocess", "--date", day, "--wait", "--timeout", "1"]) == 1
    assert f"timed out with 1 user-day(s) of reprocess:{day} still to do" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["db"],
        ["db", "init"],
        ["enqueue"],
        ["worker"],
        ["reprocess"],
        ["backfill"],
        ["verify"],
        ["prune"],
        ["alias"],
        ["alias", "add"],
        ["project"],
        ["project", "set"],
        ["demo"],
        ["up"],
    ],
)
def test_help_reads_like_the_readme(command):
    proc = hbw(*command, "--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert text.startswith("usage: hbw")
    if not command:
        for phrase in (
            "DATABASE_URL",
            "REDIS_URL",
            "exit codes",
            "hbw enqueue",
            "hbw worker",
            "hbw reprocess",
            "hbw demo",
            "hbw up",
            "hbw alias add",
            "HBW_DATA_DIR",
        ):
            assert phrase in text
