"""How many CPUs this process may use: the container's limit, not the host's count.

A container limited to 2 CPUs on a 64-core host sees 64 in ``os.cpu_count()``; 64 worker processes
there would be throttled by the kernel most of each period. The limit is the CPU quota of the
process's cgroup (and of its ancestors: a parent's limit applies too), in cgroup v2 (``cpu.max``)
or v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded down (a 1.5-CPU limit runs one
busy process unthrottled, not two throttled), and the CPUs the process may run on
(``sched_getaffinity``, which a cpuset limits). At least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_quota(proc_cgroup, root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def cgroup_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The smallest CPU quota (in CPUs) on the way from this process's cgroup up to the root, or
    None when nothing limits it (or there are no cgroups to read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:  # not a cgroup line: nothing to read from it
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one hierarchy, mounted at the root (or at root/unified)
            for base in (root, root / "unified"):
                quotas += [_v2(d / "cpu.max") for d in _up(base, path)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's hierarchy (or its "cpu" link)
            for base in {root / controllers, root / "cpu"}:
                quotas += [_v1(d) for d in _up(base, path)]
    limits = [quota for quota in quotas if quota is not None]
    return min(limits) if limits else None


def _up(base: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors' up to `base` (inside a container the process's
    path is often its host path while `base` is already its own cgroup, so `base` counts too)."""
    parts = [part for part in path.strip("/").split("/") if part]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
