"""Every test session ends by checking that no test left a process or a temporary directory
behind (tests/conftest.py, nothing_left_behind): proven here on a session whose test does."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from worker.embedded.server import pid_alive

LEAKY = "HBW_TEST_LEAKY_SESSION"


@pytest.mark.skipif(
    LEAKY not in os.environ, reason="run by test_a_session_reports_what_its_tests_left_behind"
)
def test_that_leaves_things_behind():
    directory = tempfile.mkdtemp(prefix="forgotten-")
    child = subprocess.Popen(["sleep", "300"])
    # a detached process, as a daemonized server is: only its working directory ties it to the session
    subprocess.run(["sh", "-c", "sleep 301 & echo $! > pid"], cwd=directory, check=True)
    Path(os.environ[LEAKY]).write_text(f"{child.pid} {Path(directory, 'pid').read_text().strip()}")


def test_a_session_reports_what_its_tests_left_behind(tmp_path):
    pids = tmp_path / "pids"
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "leaves_things_behind"],
        env={**os.environ, LEAKY: str(pids)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = session.stdout + session.stderr
    assert session.returncode != 0, output
    child, detached = (int(pid) for pid in pids.read_text().split())
    assert "this session's tests left behind" in output
    for line in (
        f"process {child}: sleep 300",
        f"process {detached}: sleep 301",
        "temporary directory forgotten-",
    ):
        assert line in output, output
    deadline = time.monotonic() + 10  # and they are gone (killed by the check)
    while (pid_alive(child) or pid_alive(detached)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child) and not pid_alive(detached)
