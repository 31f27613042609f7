"""HBW_PROCESSES' default: the CPUs a container may use (cgroup v1 and v2 quotas, affinity)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.cpus import available_cpus, cgroup_quota

AFFINITY = len(os.sched_getaffinity(0))


def tree(tmp_path, proc: str, files: dict[str, str]):
    """A /proc/self/cgroup with `proc` and a cgroup root holding `files`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc").write_text(proc)
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return tmp_path / "proc", root


@pytest.mark.parametrize(
    ("proc", "files", "quota"),
    [
        # v2 inside a container: its own cgroup is the root
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
        # v2 seen from the host: the tightest limit on the way up counts
        ("0::/kubepods/pod1/c1\n", {"kubepods/cpu.max": "400000 100000", "kubepods/pod1/c1/cpu.max": "max 100000"}, 4.0),
        ("0::/a/b\n", {"a/cpu.max": "200000 100000", "a/b/cpu.max": "300000 100000"}, 2.0),
        # v2 in hybrid mode, under unified/
        ("0::/\n", {"unified/cpu.max": "50000 100000"}, 0.5),
        # v1, the cpu controller mounted with cpuacct
        ("3:cpu,cpuacct:/docker/abc\n0::/\n", {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                                               "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, 2.0),
        # no limit anywhere
        ("1:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000", "cpu.max": "max 100000"}, None),
        ("0::/\n", {}, None),
        # an unreadable line or file is no limit, never an error
        ("garbage\n0::/\n", {"cpu.max": "100000 100000"}, 1.0),
        ("0::/\n", {"cpu.max": "lots\n"}, None),
    ],
)  # fmt: skip
def test_the_quota_is_the_tightest_limit_of_the_cgroup_and_its_ancestors(tmp_path, proc, files, quota):
    assert cgroup_quota(*tree(tmp_path, proc, files)) == quota


def test_processes_follow_the_quota_rounded_down_and_at_least_one(tmp_path):
    assert available_cpus(*tree(tmp_path / "a", "0::/\n", {"cpu.max": "50000 100000"})) == 1
    assert available_cpus(*tree(tmp_path / "b", "0::/\n", {"cpu.max": "190000 100000"})) == min(AFFINITY, 1)
    assert available_cpus(*tree(tmp_path / "c", "0::/\n", {"cpu.max": "max 100000"})) == AFFINITY
    assert (
        available_cpus(tmp_path / "no-such-file", tmp_path) == AFFINITY
    )  # no cgroups: the CPUs it may run on


def test_hbw_processes_defaults_to_them(monkeypatch):
    from worker.settings import Settings

    monkeypatch.delenv("HBW_PROCESSES", raising=False)
    assert Settings().processes == available_cpus()
    monkeypatch.setenv("HBW_PROCESSES", "3")
    assert Settings().processes == 3


def test_a_real_cgroup_quota_limits_the_default(tmp_path):
    """A process moved into a cgroup v1 limited to half a CPU defaults to one worker process."""
    group = Path("/sys/fs/cgroup/cpu") / f"hbw-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "cpu.cfs_quota_us").write_text("50000")
    except OSError as e:
        pytest.skip(f"no writable cgroup v1 cpu hierarchy here: {e}")
    try:
        script = "from worker.settings import Settings; print(Settings().processes)"
        out = subprocess.run(
            ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "{sys.executable}" -c "{script}"'],
            capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items() if k != "HBW_PROCESSES"},
        )  # fmt: skip
        assert out.stdout.strip() == "1"
    finally:
        group.rmdir()
