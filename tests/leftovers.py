"""What a test session left behind: processes it started that still run, and entries in its own
temporary directory. tests/conftest.py checks both when a session ends.

Other sessions run on the same machine at the same time, so only this session's own are
counted: its descendants, and processes working in (or started from) its temporary directory,
which catches the servers that detach from their parent (pg_ctl's postmaster, a daemonized Redis).
Linux only (/proc); elsewhere no process is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

#: pytest's own tmp_path directories (removed with the session's directory).
PYTEST_DIRS = "pytest-of-"


def _processes() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies excluded)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] not in ("Z", "X"):
                found[int(stat.parent.name)] = int(fields[1])
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _works_in(pid: int, base: str) -> bool:
    with contextlib.suppress(OSError):
        if os.readlink(f"/proc/{pid}/cwd").startswith(base + "/"):
            return True
    return base + "/" in _command(pid)


def stray_processes(base: Path) -> list[int]:
    """This session's processes that still run: descendants of this process (but Python's own
    multiprocessing resource tracker, which ends with it) and processes working in `base`."""
    parents, me = _processes(), os.getpid()
    descendants, frontier = set(), {me}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    strays = {pid for pid in descendants if "resource_tracker" not in _command(pid)}
    strays |= {pid for pid in parents if pid != me and _works_in(pid, str(base))}
    return sorted(strays)


def leftovers(base: Path) -> list[str]:
    """Describe what the session left behind, then kill those processes (they are its own)."""
    report = []
    for pid in stray_processes(base):
        report.append(f"process {pid}: {_command(pid)}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    report += [
        f"temporary {'directory' if path.is_dir() else 'file'} {path.name}"
        for path in sorted(base.iterdir())
        if not path.name.startswith(PYTEST_DIRS)
    ]
    return report
