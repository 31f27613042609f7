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

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence

import dramatiq
import redis
import sqlalchemy as sa

from db.schema import expected_version, installed_version
from worker.broker import setup_broker
from worker.database import get_engine
from worker.errors import ConfigError, HbwError, Unavailable, explain
from worker.logs import configure_logging, get_logger
from worker.messages import QUEUES, RECOMPUTE
from worker.settings import Settings
from worker.sweeper import OrphanSweeper

log = get_logger("hbw.worker")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 3


class StartupError(ConfigError):
    """The worker must not start (missing schema, bad configuration); the message says why."""


def _wait_for(what: str, check, timeout: float, settings: Settings):
    """Run `check` until the server answers, for up to `timeout` seconds (a worker starting while
    the database restarts should wait for it, not crash-loop). Waiting does not fix a wrong URL,
    a missing database or a refused login: those stop it at once."""
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        try:
            return check()
        except (sa.exc.OperationalError, redis.ConnectionError) as e:
            problem = explain(e, settings.database_url, settings.redis_url)
            if isinstance(problem, ConfigError):
                raise problem from None
            if time.monotonic() + delay > deadline:
                raise Unavailable(f"{problem} (waited {timeout:g}s)") from None
            log.warning("startup.waiting", server=what, error=str(problem))
            time.sleep(delay)
            delay = min(delay * 2, 5)


def check_schema(settings: Settings) -> None:
    def read_version():
        with get_engine(settings.database_url).connect() as conn:
            return installed_version(conn)

    version = _wait_for("PostgreSQL", read_version, settings.startup_timeout, settings)
    wanted = expected_version()
    if version is None:
        raise StartupError("the database has no heartbeat-worker schema; run `hbw db init` first")
    if version != wanted:
        raise StartupError(
            f"the database schema is version {version} but this release needs {wanted}; "
            + ("run `hbw db init` to upgrade it" if version < wanted else "upgrade the workers")
        )


def redis_warnings(broker: dramatiq.Broker) -> list[str]:
    """What in Redis's configuration can lose messages (README, Reliability)."""
    try:
        config = {
            **broker.client.config_get("appendonly"),
            **broker.client.config_get("save"),
            **broker.client.config_get("maxmemory-policy"),
        }
    except redis.ResponseError:  # CONFIG disabled, as on some managed services
        return ["cannot read the Redis configuration (CONFIG is disabled): make sure it persists to disk "
                "(appendonly yes) and never evicts keys (maxmemory-policy noeviction)"]  # fmt: skip
    warnings = []
    if config.get("appendonly") != "yes" and not config.get("save"):
        warnings.append("Redis keeps nothing on disk (appendonly no, no save points): a Redis restart loses "
                        "every queued message. Set appendonly yes (README, Reliability)")  # fmt: skip
    elif config.get("appendonly") != "yes":
        warnings.append("Redis persists only by snapshots (save): a crash loses the messages queued since "
                        "the last one. Set appendonly yes (README, Reliability)")  # fmt: skip
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        warnings.append(f"Redis maxmemory-policy is {config['maxmemory-policy']}: under memory pressure it "
                        "evicts keys, queued messages included. Set maxmemory-policy noeviction")  # fmt: skip
    return warnings


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
    supervised: bool = False,
    stop: threading.Event | None = None,
) -> int:
    """Run one worker process in the foreground; returns its exit code."""
    queues = list(queues or QUEUES)
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise StartupError(f"unknown queue(s): {', '.join(unknown)} (known: {', '.join(QUEUES)})")
    check_schema(settings)

    broker = setup_broker(settings)
    _wait_for("Redis", broker.client.ping, settings.startup_timeout, settings)
    for warning in redis_warnings(broker):
        log.warning("redis.config", problem=warning)
    jobs = [job for job, (queue, _) in RECOMPUTE.items() if queue in queues]
    sweeper = OrphanSweeper(
        lambda: get_engine(settings.database_url, pool_size=settings.threads + 2),
        jobs=jobs,
        keys_per_message=settings.recompute_keys_per_message,
        interval=settings.sweep_interval_s,
        min_age=dt.timedelta(seconds=settings.sweep_min_age_s),
        stale_after=dt.timedelta(seconds=settings.sweep_stale_after_s),
    )
    broker.add_middleware(sweeper)
    stop = stop or threading.Event()
    if handle_signals:
        _install_stop_handlers(stop, supervised=supervised)

    # Idle threads wake up every worker_timeout ms to check for shutdown; a burst worker should
    # notice quickly that it is done, a long-running one should not poll Redis needlessly.
    worker = dramatiq.Worker(
        broker,
        queues=set(queues),
        worker_threads=threads or settings.threads,
        worker_timeout=100 if burst else 1000,
    )
    worker.start()
    log.info("worker.started", queues=queues, threads=worker.worker_threads, burst=burst)
    try:
        while not stop.wait(poll_interval):
            if burst and queues_empty(broker, queues) and sweeper.sweep(everything=True) == 0:
                log.info("worker.drained")
                break
    finally:
        worker.stop(timeout=int(settings.shutdown_timeout * 1000))
        # Dramatiq leaves its per-worker middleware on the broker; drop it with the sweeper, so a
        # later worker in the same process (tests, the demo) starts clean.
        broker.middleware[:] = [
            m for m in broker.middleware if m is not sweeper and getattr(m, "worker", None) is not worker
        ]
    log.info("worker.stopped")
    return EXIT_OK


def _install_stop_handlers(stop: threading.Event, *, supervised: bool) -> None:
    """First signal: stop gracefully. A second one exits at once, unless a supervisor runs this
    process: then repeats are ignored (systemd and `timeout` signal the whole process group, so
    a child may get the same SIGTERM twice) and the supervisor escalates with SIGKILL."""

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.info("worker.stopping", signal=name)
            stop.set()
        elif not supervised:
            log.warning("worker.killed", signal=name)
            raise SystemExit(EXIT_FAILED)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Stop gracefully if the supervisor dies (SIGKILL, OOM): never leave workers orphaned."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("worker.orphaned", parent=parent)
            stop.set()


def _child(settings: Settings, queues: list[str] | None, threads: int, burst: bool, parent: int) -> None:
    # Ctrl-C reaches the whole process group; the supervisor turns it into one SIGTERM per child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
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
    check_schema(settings)  # fail once, clearly, rather than once per child
    _wait_for("Redis", redis.Redis.from_url(settings.redis_url).ping, settings.startup_timeout, settings)

    context = multiprocessing.get_context("spawn")
    args = (settings, list(queues) if queues else None, threads, burst, os.getpid())
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

    procs = {index: start(index) for index in range(processes)}
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    codes: dict[int, int] = {}
    told: set[int] = set()  # pids sent SIGTERM
    restart_at: dict[int, float] = {}
    while len(codes) < len(procs):
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            if index in codes:
                continue
            if proc.is_alive():
                if stopping.is_set() and proc.pid not in told:
                    proc.terminate()  # SIGTERM: graceful; every live worker gets exactly one
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
    return (EXIT_CONFIG if EXIT_CONFIG in failed else EXIT_FAILED) if failed else EXIT_OK
