"""Running workers: one process (:func:`run_worker`) or a supervised group (:func:`run_workers`).

A worker process consumes the queues it is given with a thread pool (Dramatiq's ``Worker``).
SIGTERM or SIGINT stops it gracefully: in-flight messages get ``shutdown_timeout`` seconds to
finish, prefetched ones go back to their queue; a second signal exits at once (whatever was in
flight is redelivered later). With ``burst`` the process exits 0 once its queues, including the
delayed ones, are empty, nothing is in flight and no recomputation is pending.

The supervisor restarts a worker process that dies unexpectedly; its unacked messages are
rescued by the broker's maintenance (see ``HbwRedisBroker``).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence

import dramatiq

from db.schema import expected_version, installed_version
from worker.broker import setup_broker
from worker.database import get_engine
from worker.logs import configure_logging, get_logger
from worker.messages import QUEUES, RECOMPUTE
from worker.settings import Settings
from worker.sweeper import OrphanSweeper

log = get_logger("hbw.worker")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 3


class StartupError(Exception):
    """The worker must not start (missing schema, bad configuration); the message says why."""


def check_schema(settings: Settings) -> None:
    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        version = installed_version(conn)
    wanted = expected_version()
    if version is None:
        raise StartupError("the database has no heartbeat-worker schema; run `hbw db init` first")
    if version != wanted:
        raise StartupError(
            f"the database schema is version {version} but this release needs {wanted}; "
            + ("run `hbw db init` to upgrade it" if version < wanted else "upgrade the workers")
        )


def queues_empty(broker: dramatiq.Broker, queues: Sequence[str]) -> bool:
    """True when these queues hold no message: ready, delayed, prefetched or in flight.

    Dramatiq's Redis broker keeps every message in ``<ns>:<queue>.msgs`` until it is acked,
    and delayed ones (retries) in ``<ns>:<queue>.DQ.msgs``.
    """
    pipe = broker.client.pipeline(transaction=False)
    for queue in queues:
        pipe.hlen(f"{broker.namespace}:{queue}.msgs")
        pipe.hlen(f"{broker.namespace}:{queue}.DQ.msgs")
    return not any(pipe.execute())


def run_worker(
    settings: Settings,
    *,
    queues: Sequence[str] | None = None,
    threads: int | None = None,
    burst: bool = False,
    poll_interval: float = 0.25,
    handle_signals: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Run one worker process in the foreground; returns its exit code."""
    queues = list(queues or QUEUES)
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise StartupError(f"unknown queue(s): {', '.join(unknown)} (known: {', '.join(QUEUES)})")
    check_schema(settings)

    broker = setup_broker(settings)
    jobs = [job for job, (queue, _) in RECOMPUTE.items() if queue in queues]
    sweeper = OrphanSweeper(
        lambda: get_engine(settings.database_url, pool_size=settings.threads + 2),
        jobs=jobs,
        keys_per_message=settings.recompute_keys_per_message,
    )
    broker.add_middleware(sweeper)
    stop = stop or threading.Event()
    if handle_signals:
        _install_stop_handlers(stop)

    worker = dramatiq.Worker(broker, queues=set(queues), worker_threads=threads or settings.threads)
    worker.start()
    log.info("worker.started", queues=queues, threads=worker.worker_threads, burst=burst)
    try:
        while not stop.wait(poll_interval):
            if burst and queues_empty(broker, queues) and sweeper.sweep(everything=True) == 0:
                log.info("worker.drained")
                break
    finally:
        worker.stop(timeout=int(settings.shutdown_timeout * 1000))
        broker.middleware.remove(sweeper)
    log.info("worker.stopped")
    return EXIT_OK


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum, frame):
        if stop.is_set():
            log.warning("worker.killed", signal=signal.Signals(signum).name)
            raise SystemExit(EXIT_FAILED)
        log.info("worker.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _child(settings: Settings, queues: list[str] | None, threads: int, burst: bool) -> None:
    # Ctrl-C reaches the whole process group; the supervisor turns it into one SIGTERM per child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_format, settings.log_level)
    try:
        code = run_worker(settings, queues=queues, threads=threads, burst=burst)
    except StartupError as e:
        log.error("worker.refused", reason=str(e))
        code = EXIT_CONFIG
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
    check_schema(settings)  # fail once, clearly, rather than once per child

    context = multiprocessing.get_context("spawn")
    args = (settings, list(queues) if queues else None, threads, burst)
    stopping = threading.Event()

    def start(index: int) -> multiprocessing.Process:
        proc = context.Process(target=_child, args=args, name=f"hbw-worker-{index}", daemon=False)
        proc.start()
        log.info("worker.process_started", index=index, pid=proc.pid)
        return proc

    def forward(signum, frame):
        if stopping.is_set():
            for proc in procs.values():
                if proc.is_alive():
                    proc.kill()
            return
        stopping.set()
        log.info("worker.stopping", signal=signal.Signals(signum).name, processes=len(procs))
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: graceful

    procs = {index: start(index) for index in range(processes)}
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    codes: dict[int, int] = {}
    while len(codes) < len(procs):
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if index in codes or proc.is_alive():
                continue
            code = proc.exitcode
            if stopping.is_set() or burst or code == EXIT_CONFIG:
                codes[index] = code
            else:
                log.error("worker.process_died", index=index, pid=proc.pid, exitcode=code)
                time.sleep(1)
                procs[index] = start(index)
    failed = [code for code in codes.values() if code != 0]
    return (EXIT_CONFIG if EXIT_CONFIG in failed else EXIT_FAILED) if failed else EXIT_OK
