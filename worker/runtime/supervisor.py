"""Supervising a group of worker processes (`hbw worker --processes N`).

The supervisor starts N worker processes (``spawn``: nothing inherited but the settings), restarts
one that dies unexpectedly (its unacked messages are rescued by the broker's maintenance, see
``HbwRedisBroker``), and stops them all on SIGTERM or Ctrl-C: one SIGTERM to each, once it can take
it (a child starts with stop signals ignored and says over a pipe when it has its handler, so a
stop that lands while it imports still ends in a clean exit 0); a second signal to the supervisor
kills them at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

from worker.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, HbwError
from worker.logs import configure_logging, get_logger
from worker.runtime.redis_client import redis_client
from worker.runtime.runner import (
    StoppedDuringStartup,
    check_schema,
    install_stop_handlers,
    run_worker,
    wait_for,
)
from worker.settings import Settings

log = get_logger("hbw.worker")


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Stop gracefully if the supervisor dies (SIGKILL, OOM): never leave workers orphaned."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("worker.orphaned", parent=parent)
            stop.set()


def _child(
    settings: Settings, queues: list[str] | None, threads: int, burst: bool, parent: int, ready: Connection
) -> None:
    # Started with SIGTERM and SIGINT ignored (see run_workers): take SIGTERM now, and tell the
    # supervisor it may send it. Ctrl-C reaches the whole process group; the supervisor turns it
    # into a SIGTERM per child, so SIGINT stays off.
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    install_stop_handlers(stop, supervised=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ready.send_bytes(b"1")
    ready.close()
    threading.Thread(target=_watch_parent, args=(parent, stop), name="parent-watch", daemon=True).start()
    try:
        code = run_worker(settings, queues=queues, threads=threads, burst=burst, supervised=True, stop=stop)
    except HbwError as e:
        log.error("worker.refused", reason=str(e))
        code = e.exit_code
    raise SystemExit(code)


def run_workers(
    settings: Settings,
    *,
    processes: int,
    threads: int,
    queues: Sequence[str] | None = None,
    burst: bool = False,
) -> int:
    """Run `processes` worker processes and supervise them; returns the exit code."""
    if processes == 1:
        return run_worker(settings, queues=queues, threads=threads, burst=burst)
    stopping = threading.Event()
    procs: dict[int, multiprocessing.Process] = {}

    def forward(signum, frame):
        if stopping.is_set():
            for proc in procs.values():
                if proc.is_alive():
                    proc.kill()
            return
        stopping.set()
        log.info("worker.stopping", signal=signal.Signals(signum).name, processes=len(procs))

    signal.signal(signal.SIGTERM, forward)  # first: a stop signal at any moment stops cleanly
    signal.signal(signal.SIGINT, forward)
    with contextlib.suppress(StoppedDuringStartup):  # fail once, clearly, rather than once per child
        check_schema(settings, stop=stopping)
        wait_for("Redis", redis_client(settings).ping, settings, stopping)

    context = multiprocessing.get_context("spawn")
    args = (settings, list(queues) if queues else None, threads, burst, os.getpid())
    ready: dict[int, Connection] = {}  # pid -> readable once that child takes SIGTERM

    def start(index: int) -> multiprocessing.Process:
        reader, writer = context.Pipe(duplex=False)
        proc = context.Process(target=_child, args=(*args, writer), name=f"hbw-worker-{index}", daemon=False)
        # The child starts with stop signals ignored (dispositions survive exec) until it can stop
        # cleanly: a SIGTERM during its start-up would kill it mid-import, with nothing logged.
        saved = signal.signal(signal.SIGTERM, signal.SIG_IGN), signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc.start()
        finally:
            signal.signal(signal.SIGTERM, saved[0])
            signal.signal(signal.SIGINT, saved[1])
        writer.close()
        ready[proc.pid] = reader
        log.info("worker.process_started", index=index, pid=proc.pid)
        return proc

    if not stopping.is_set():
        procs.update({index: start(index) for index in range(processes)})
    codes: dict[int, int] = {}
    told: set[int] = set()  # pids sent SIGTERM
    restart_at: dict[int, float] = {}
    while len(codes) < len(procs):
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if index in codes:
                continue
            if proc.is_alive():
                if stopping.is_set() and proc.pid not in told and ready[proc.pid].poll():
                    proc.terminate()  # SIGTERM: graceful; every worker gets exactly one, once it takes it
                    told.add(proc.pid)
                continue
            if stopping.is_set() or burst or proc.exitcode == EXIT_CONFIG:
                # one that died earlier and awaited its restart was dealt with already
                codes[index] = 0 if index in restart_at else proc.exitcode
            elif index not in restart_at:
                log.error("worker.process_died", index=index, pid=proc.pid, exitcode=proc.exitcode)
                restart_at[index] = time.monotonic() + 1
            elif time.monotonic() >= restart_at[index]:
                del restart_at[index]
                procs[index] = start(index)
    failed = [code for code in codes.values() if code != 0]
    log.info("worker.all_stopped", processes=len(procs), failed=len(failed))
    return (EXIT_CONFIG if EXIT_CONFIG in failed else EXIT_FAILED) if failed else EXIT_OK
