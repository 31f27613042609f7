"""Running one worker process (:func:`run_worker`); ``worker.runtime.supervisor`` runs a group of them.

A worker process consumes the queues it is given with a thread pool (Dramatiq's ``Worker``).
SIGTERM or SIGINT stops it gracefully, whenever it arrives (during start-up too): in-flight
messages get ``shutdown_timeout`` seconds to finish, prefetched ones go back to their queue; a
second signal exits at once (whatever was in flight is redelivered later). With ``burst`` the
process exits 0 once its queues, including the delayed ones, are empty, nothing is in flight and
no recomputation is pending.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Sequence

import dramatiq
import redis
import sqlalchemy as sa

from db.derived_jobs import DERIVED_JOBS
from db.partitions import ensure_months_ahead
from db.schema import expected_version, installed_version
from worker.database import get_engine
from worker.errors import EXIT_FAILED, EXIT_OK, ConfigError, Unavailable, explain
from worker.logs import get_logger
from worker.runtime.broker import setup_broker
from worker.runtime.liveness import broken
from worker.runtime.messages import QUEUES, RECOMPUTE_QUEUE
from worker.runtime.outbox import OrphanSweeper
from worker.runtime.redis_keys import queues_empty
from worker.runtime.vacuum import OutboxVacuum
from worker.settings import Settings

log = get_logger("hbw.worker")


class StartupError(ConfigError):
    """The worker must not start (missing schema, bad configuration); the message says why."""


class StoppedDuringStartup(Exception):
    """A stop signal arrived while the worker waited for its servers: it stops, cleanly."""


def wait_for(what: str, check, settings: Settings, stop: threading.Event | None = None):
    """Run `check` until the server answers, for up to HBW_STARTUP_TIMEOUT seconds (a worker
    starting while the database restarts should wait for it, not crash-loop), or until `stop` is
    set. Waiting does not fix a wrong URL, a missing database or a refused login: those stop it at
    once."""
    timeout = settings.startup_timeout
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
            if (stop or threading.Event()).wait(delay):
                raise StoppedDuringStartup from None
            delay = min(delay * 2, 5)


def check_schema(settings: Settings, stop: threading.Event | None = None) -> None:
    def read_version():
        with get_engine(settings.database_url).connect() as conn:
            return installed_version(conn)

    version = wait_for("PostgreSQL", read_version, settings, stop)
    wanted = expected_version()
    if version is None:
        raise StartupError("the database has no heartbeat-worker schema; run `hbw db init` first")
    if version != wanted:
        raise StartupError(
            f"the database schema is version {version} but this release needs {wanted}; "
            + ("run `hbw db init` to upgrade it" if version < wanted else "upgrade the workers")
        )
    with get_engine(settings.database_url).begin() as conn:  # this month's partition and the next two
        ensure_months_ahead(conn)


def redis_warnings(broker: dramatiq.Broker) -> list[str]:
    """What in Redis's configuration can lose messages (docs/reliability.md)."""
    try:
        config = {
            **broker.client.config_get("appendonly"),
            **broker.client.config_get("save"),
            **broker.client.config_get("maxmemory-policy"),
        }
    except redis.ResponseError:  # CONFIG disabled, as on some managed services
        return [
            "cannot read the Redis configuration (CONFIG is disabled): make sure it persists to disk "
            "(appendonly yes) and never evicts keys (maxmemory-policy noeviction)"
        ]
    warnings = []
    if config.get("appendonly") != "yes" and not config.get("save"):
        warnings.append(
            "Redis keeps nothing on disk (appendonly no, no save points): a Redis restart loses "
            "every queued message. Set appendonly yes (docs/reliability.md)"
        )
    elif config.get("appendonly") != "yes":
        warnings.append(
            "Redis persists only by snapshots (save): a crash loses the messages queued since "
            "the last one. Set appendonly yes (docs/reliability.md)"
        )
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {config['maxmemory-policy']}: under memory pressure it "
            "evicts keys, queued messages included. Set maxmemory-policy noeviction"
        )
    return warnings


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
    stop = stop or threading.Event()
    if handle_signals:  # first, so a stop signal during startup stops it cleanly too
        install_stop_handlers(stop, supervised=supervised)
    try:
        check_schema(settings, stop)
        broker = setup_broker(settings)
        wait_for("Redis", broker.client.ping, settings, stop)
    except StoppedDuringStartup:
        stop.set()
    if stop.is_set():
        log.info("worker.stopped", before_start=True)
        return EXIT_OK
    for warning in redis_warnings(broker):
        log.warning("redis.config", problem=warning)

    def engine() -> sa.Engine:
        return get_engine(settings.database_url, pool_size=settings.threads + 2)

    sweeper = OrphanSweeper(
        engine,
        broker,
        jobs=[job.name for job in DERIVED_JOBS if job.queue in queues],
        recompute=RECOMPUTE_QUEUE in queues,
        keys_per_message=settings.recompute_keys_per_message,
        interval=settings.sweep_interval_s,
        min_age=dt.timedelta(seconds=settings.sweep_min_age_s),
        stale_after=dt.timedelta(seconds=settings.sweep_stale_after_s),
    )
    broker.add_middleware(sweeper)
    if sweeper.jobs or sweeper.recompute:  # this process empties the outbox: it vacuums it too
        vacuum = OutboxVacuum(
            engine, interval=settings.outbox_vacuum_interval_s, dead_rows=settings.outbox_vacuum_dead_rows
        )
        broker.add_middleware(vacuum)

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
    code = EXIT_OK
    try:
        while not stop.wait(poll_interval):
            if reason := broken(worker):  # Dramatiq never restarts a thread: let the supervisor restart us
                log.error("worker.broken", reason=reason)
                code = EXIT_FAILED
                break
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
    return code


def install_stop_handlers(stop: threading.Event, *, supervised: bool) -> None:
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
