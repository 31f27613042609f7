"""Worker processes for the benchmark: started as the Procfile starts them, measured from /proc."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def hbw_command(*args: str) -> list[str]:
    """`hbw ...` from this environment (the console script next to this interpreter)."""
    script = Path(sys.executable).with_name("hbw")
    return [str(script) if script.exists() else shutil.which("hbw") or "hbw", *args]


def proc_stat(pid: int | str) -> tuple[str, int, float] | None:
    """(program name, parent pid, CPU seconds) of a process from /proc/PID/stat, or None if gone.
    CPU seconds are utime + stime + cutime + cstime: its own and its reaped children's."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, tail = f.read().rsplit(")", 1)
        fields = tail.split()
        return head.split("(", 1)[1], int(fields[1]), sum(int(v) for v in fields[11:15]) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def _all_stats() -> dict[int, tuple[str, int, float]]:
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := proc_stat(entry.name)) is not None:
            stats[int(entry.name)] = stat
    return stats


def children(pid: int) -> list[int]:
    return [child for child, (_, parent, _) in _all_stats().items() if parent == pid]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":")
                    values[name] = int(value.split()[0])
    except OSError:
        pass
    return values


class Workers:
    """A supervisor (`hbw worker` or any command) and its worker children, with an RSS sampler."""

    def __init__(self, command: Sequence[str], env: dict[str, str], expect: int) -> None:
        self.command, self.env, self.expect = list(command), env, expect
        self.proc: subprocess.Popen | None = None
        self.peak_kib: dict[int, int] = {}
        self.samples: list[tuple[float, dict[int, int]]] = []  # (seconds since start, pid -> RSS KiB)
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> Workers:
        log = os.environ.get("HBW_BENCH_WORKER_LOG")  # keep the workers' logs, for a closer look
        stderr = open(log, "ab") if log else subprocess.PIPE
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 60
        while len(self.pids()) < self.expect:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:  # stuck: stop it, or reading its stderr never ends
                    self.proc.kill()
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"{' '.join(self.command)} did not start its workers:\n{err}")
            time.sleep(0.1)
        if self.proc.stderr:
            threading.Thread(target=self._drain_stderr, daemon=True).start()
        time.sleep(2)  # imports done, consumers connected
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _drain_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        for _ in self.proc.stderr:
            pass

    def pids(self) -> list[int]:
        """The worker processes: the children, or the command itself when it runs one process
        in-process (`hbw worker` with HBW_PROCESSES=1 does)."""
        if not self.proc:
            return []
        kids = children(self.proc.pid)
        return kids if kids or self.expect > 1 else [self.proc.pid]

    def _sample(self, every: float = 0.5) -> None:
        started = time.monotonic()
        last_kept = -1e9
        while not self._stop.wait(every):
            now = {pid: memory_kib(pid) for pid in self.pids()}
            for pid, mem in now.items():
                self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), mem.get("VmHWM", 0), mem.get("VmRSS", 0))
            elapsed = time.monotonic() - started
            if elapsed - last_kept >= 10:  # a sample every 10 s for the soak report
                self.samples.append((elapsed, {pid: mem.get("VmRSS", 0) for pid, mem in now.items()}))
                last_kept = elapsed

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._sampler:
            self._sampler.join()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


PROGRAMS = ("postgres", "redis-server", "python", "hbw")


def _program(name: str) -> str:
    program = next((p for p in PROGRAMS if name.startswith(p)), "other")
    return "python" if program == "hbw" else program


def cpu_seconds_by_program() -> dict[str, float]:
    """CPU seconds (user + system) used so far by every process on the machine, by program:
    'postgres', 'redis-server', 'python' (heartbeat-worker, the benchmark, dramatiq) and 'other'.

    Processes that ended count too, under the program of the process that reaped them: the
    kernel adds a reaped child's time to its parent's cutime/cstime (the postmaster's, for
    backends, autovacuum and parallel workers; the benchmark's, for `--burst` workers). A live
    process's cutime holds only children that ended, so nothing is counted twice.
    """
    totals: dict[str, float] = {}
    for name, _, used in _all_stats().values():
        program = _program(name)
        totals[program] = totals.get(program, 0.0) + used
    return totals


def server_pids(engine, broker) -> dict[str, int]:
    """PostgreSQL's postmaster and Redis's process, by name ("postgres", "redis"), when they run
    on this machine (their CPU can be measured: cpu_seconds_by_tree)."""
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    pids = {"postgres": (proc_stat(backend) or ("", 0))[1] if _named(backend, "postgres") else 0,
            "redis": int(broker.client.info("server")["process_id"])}  # fmt: skip
    return {name: pid for name, pid in pids.items() if pid and _named(pid, name)}


def _named(pid: int, prefix: str) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0].startswith(prefix)


def cpu_seconds_by_tree(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and all its descendants, ended ones included
    (as in cpu_seconds_by_program): e.g. {"workers": supervisor pid, "postgres": postmaster pid}.

    Unlike cpu_seconds_by_program this ignores every other process on the machine, so a
    benchmark's figures hold while other people's tests run beside it (on servers of its own).
    """
    stats = _all_stats()
    kids: dict[int, list[int]] = {}
    for pid, (_, parent, _) in stats.items():
        kids.setdefault(parent, []).append(pid)
    totals = {}
    for kind, root in roots.items():
        used, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                used += stats[pid][2]
                todo.extend(kids.get(pid, ()))
        totals[kind] = used
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds the machine's cores spent busy since boot, all processes (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / _TICKS


def machine(date_format: str = "%Y-%m-%d %H:%M UTC") -> dict[str, object]:
    """What a result was measured on, for the JSON results of every benchmark."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime(date_format, time.gmtime()),
    }
