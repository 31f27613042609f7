"""The benchmark's CPU accounting: a process that ended during a measurement still counts."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.procs import cpu_seconds_by_program

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
