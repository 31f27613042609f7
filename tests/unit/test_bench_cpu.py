"""The benchmark's CPU accounting: a process that ended during a measurement still counts."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.procs import cpu_seconds_by_program, cpu_seconds_by_tree

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"


def test_a_process_that_ended_is_still_counted():
    # The measure covers every process on the machine: another Python process ending meanwhile
    # takes its time out of the total, so a shared machine gets three tries.
    gains = []
    for _ in range(3):
        before = cpu_seconds_by_program()
        started = time.process_time()
        subprocess.run([sys.executable, "-c", BUSY], check=True)
        own = time.process_time() - started
        after = cpu_seconds_by_program()
        # The child burned 0.4 s and is gone; its time now sits in this process's cutime.
        gains.append(after["python"] - before.get("python", 0.0) - own)
        if gains[-1] >= 0.35:
            return
    raise AssertionError(f"an ended child's 0.4 s was not counted: gained {gains}")


def test_a_process_tree_counts_its_descendants_ended_ones_included_and_nothing_else(tmp_path):
    # a child that starts a grandchild burning 0.4 s, then says so and stays alive a moment; beside
    # it a sleeper, whose tree must not count the others' work
    done = tmp_path / "grandchild-ended"
    spawner = (
        f"import pathlib, subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\n"
        f"pathlib.Path({str(done)!r}).touch()\ntime.sleep(2)"
    )
    child = subprocess.Popen([sys.executable, "-c", spawner])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        before = cpu_seconds_by_tree({"child": child.pid, "sleeper": sleeper.pid})
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:  # however busy the machine is
            time.sleep(0.05)
        after = cpu_seconds_by_tree({"child": child.pid, "sleeper": sleeper.pid})
    finally:
        sleeper.kill()
        child.wait()
        sleeper.wait()
    assert done.exists(), "the grandchild did not end in time"
    assert after["child"] - before["child"] >= 0.35, (before, after)
    assert after["sleeper"] - before["sleeper"] < 0.1, (before, after)
