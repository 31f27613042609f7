"""`hbw enqueue` streams: bounded memory whatever the input size, one bad line rejected alone, and
a word on the terminal when it waits for stdin."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time

import pytest
import redis

from worker import cli

NOW = time.time()
INPUT_BYTES = 300_000_000
RSS_LIMIT_MB = 200
#: Runs a command (stdout to the file named first) and prints its exit code and peak RSS in KiB. It
#: is started from this small process, not from pytest: a child's peak RSS counts the memory of
#: the process it was forked from.
MEASURE = """
import os, subprocess, sys
with open(sys.argv[1], "wb") as out:
    child = subprocess.Popen(sys.argv[2:], stdout=out)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""
DEEP = b"[" * 100_000 + b"]" * 100_000
BIG_NUMBER = b"9" * 5_000


def heartbeat(i: int) -> bytes:
    return json.dumps(
        {"user_id": f"user{i % 7}", "entity": f"/home/dev/src/app/module_{i}.py", "time": NOW - i,
         "project": "app", "language": "Python", "machine": "laptop",
         "user_agent": "wakatime/v1.73.0 (linux-5.15) go1.20 vscode/1.80.0 vscode-wakatime/24.2.0"}
    ).encode()  # fmt: skip


def generate(path, *, array: bool) -> tuple[int, int]:
    """~INPUT_BYTES of heartbeats, one in ten invalid, after a valid one, a deeply nested item and
    one with a 5,000-digit number (items 1 and 2, each rejected alone). Returns (valid, rejected)."""
    block = [heartbeat(i) if i % 10 else b'{"user_id": "u", "time": "soon"}' for i in range(10_000)]
    separator = b",\n" if array else b"\n"
    chunk = separator.join(block)
    repeats = INPUT_BYTES // len(chunk) + 1
    with open(path, "wb") as f:
        f.write(b"[" if array else b"")
        f.write(separator.join([heartbeat(0), DEEP, b'{"time": ' + BIG_NUMBER + b"}"]))
        for _ in range(repeats):
            f.write(separator + chunk)
        f.write(b"]\n" if array else b"\n")
    return repeats * 9_000 + 1, repeats * 1_000 + 2


@pytest.mark.parametrize("array", [False, True], ids=["json-lines", "json-array"])
def test_memory_does_not_grow_with_the_input(db, settings, tmp_path, array):
    path = tmp_path / "big.json"
    valid, rejected = generate(path, array=array)
    assert path.stat().st_size > INPUT_BYTES

    # Workers would store it all; here the queue is emptied as it fills, so Redis stays small.
    stop, client = threading.Event(), redis.Redis.from_url(settings.redis_url)
    queue = f"{settings.redis_namespace}:heartbeats"

    def empty_the_queue():
        while not stop.wait(0.1):
            client.delete(queue, f"{queue}.msgs")

    drainer = threading.Thread(target=empty_the_queue)
    drainer.start()
    try:
        with open(tmp_path / "err.txt", "wb") as err:
            measured = subprocess.run(
                [sys.executable, "-c", MEASURE, str(tmp_path / "out.json"),
                 sys.executable, "-m", "worker.cli", "enqueue", str(path), "--json"],
                stdout=subprocess.PIPE, stderr=err, check=True, timeout=600,
            )  # fmt: skip
    finally:
        stop.set()
        drainer.join()
        path.unlink()
    returncode, peak_kib = map(int, measured.stdout.split())
    assert returncode == 2, (tmp_path / "err.txt").read_text()[-2000:]
    result = json.loads((tmp_path / "out.json").read_bytes())
    assert (result["accepted"], result["enqueued"], len(result["rejected"])) == (valid, valid, rejected)
    first, second = result["rejected"][:2]
    assert (first["index"], second["index"]) == (1, 2)
    assert "nested too deeply" in first["reason"] and "more than 4300 digits" in second["reason"]
    peak_mb = peak_kib / 1024
    assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB for a {INPUT_BYTES / 1e6:.0f} MB input"


def test_a_bad_line_is_rejected_alone_and_the_rest_enqueued(db, settings, broker, tmp_path, capsys):
    lines = [heartbeat(1), DEEP, heartbeat(2), b'{"user_id": "u", "time": ' + BIG_NUMBER + b"}", heartbeat(3)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert cli.main(["enqueue", str(path), "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert (result["accepted"], result["enqueued"]) == (3, 3)
    assert result["rejected"] == [
        {"index": 1, "reason": "line 2: nested too deeply"},
        {"index": 3, "reason": "line 4: a number has more than 4300 digits"},
    ]


def test_on_a_terminal_it_says_it_reads_stdin(db, settings):
    command = [sys.executable, "-m", "worker.cli", "enqueue", "--json"]
    message = "reading heartbeats from stdin (Ctrl-D to end)"
    terminal, tty = pty.openpty()
    try:
        proc = subprocess.Popen(command, stdin=tty, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.write(terminal, heartbeat(1) + b"\n\x04")  # a line, then Ctrl-D
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(tty)
        os.close(terminal)
    assert proc.returncode == 0, err
    assert message in err.decode() and json.loads(out)["enqueued"] == 1

    piped = subprocess.run(command, input=heartbeat(2), capture_output=True, timeout=60)
    assert piped.returncode == 0 and message not in piped.stderr.decode()
