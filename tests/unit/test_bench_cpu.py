"""The benchmark's CPU accounting: a process that ended during a measurement still counts."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.procs import cpu_seconds_by_program, cpu_seconds_by_tree

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"


def test_a_process_that_ended_is_still_counted():
    before = cpu_seconds_by_program()
    started = time.process_time()
    subprocess.run([sys.executable, "-c", BUSY], check=True)
    own = time.process_time() - started
    after = cpu_seconds_by_program()
    # The child burned 0.4 s and is gone; its time now sits in this process's cutime.
    gained = after["python"] - before.get("python", 0.0) - own
    assert gained >= 0.35, (before, after)


def test_a_process_tree_counts_its_descendants_ended_ones_included_and_nothing_else():
    # a child that starts a grandchild burning 0.4 s, then stays alive a moment after it ended;
    # beside it a sleeper, whose tree must not count the others' work
    spawner = (
        f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\ntime.sleep(0.5)"
    )
    child = subprocess.Popen([sys.executable, "-c", spawner])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        time.sleep(0.05)
        before = cpu_seconds_by_tree({"child": child.pid, "sleeper": sleeper.pid})
        time.sleep(0.7)  # the grandchild has run and ended; the child is alive, sleeping
        after = cpu_seconds_by_tree({"child": child.pid, "sleeper": sleeper.pid})
    finally:
        child.wait()
        sleeper.wait()
    assert after["child"] - before["child"] >= 0.35, (before, after)
    assert after["sleeper"] - before["sleeper"] < 0.1, (before, after)
