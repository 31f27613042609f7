"""Our Dramatiq middleware: per-message log context, one summary line per message, and a loud
structured line for every dead-lettered message.

The summary line (``message.done``) carries the actor, message id, batch id, duration and whatever
counts the actor bound to the log context while it ran (received, inserted, recomputed, ...)."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime.deadletters import record_error
from worker.runtime.liveness import ProcessHealth, broken, ready_messages
from worker.runtime.messages import PoisonMessage

log = get_logger("hbw.messages")


class MessageLog(Middleware):
    """Binds the message id and actor to every log line of a message, and logs its outcome.

    Listed before Retries, so its ``after_process_message`` runs after Retries' (Dramatiq runs
    after-hooks in reverse): a message that will not be retried is already marked failed.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(message_id=message.message_id, actor=message.actor_name)
        if batch_id := message.options.get("batch_id"):  # correlates a batch from enqueue to derived jobs
            structlog.contextvars.bind_contextvars(batch_id=batch_id)
        message.options["hbw_started"] = time.monotonic()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result=None, exception=None
    ) -> None:
        started = message.options.pop("hbw_started", None)
        duration_ms = round((time.monotonic() - started) * 1000, 1) if started else None
        try:
            if exception is None:
                log.info("message.done", duration_ms=duration_ms)
                return
            # Ids, counts and reasons only: never the payload (docs/operating.md, Logs).
            failure = {
                "duration_ms": duration_ms,
                "error": describe_error(exception),
                "retries": message.options.get("retries", 0),
                "queue": message.queue_name,
            }
            if not isinstance(exception, PoisonMessage):  # unexpected: where it happened, frames only
                failure["where"] = _where(exception)
            if message.failed:
                message.options["hbw_error"] = describe_error(exception, limit=2000)
                log.error("message.dead_lettered", **failure)
            else:
                log.warning("message.retrying", **failure)
        finally:
            structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        message.options.pop("hbw_started", None)
        if message.failed:
            log.error("message.dead_lettered", error="skipped", queue=message.queue_name)
        structlog.contextvars.clear_contextvars()

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        """Keep the reason beside the dead letter (Dramatiq keeps only the message)."""
        error = message.options.pop("hbw_error", None) or "failed"
        if "redis_message_id" in message.options and hasattr(broker, "client"):
            record_error(
                broker,
                message.queue_name,
                message.options["redis_message_id"],
                error=error,
                actor=message.actor_name,
                message_id=message.message_id,
            )


def _where(error: BaseException) -> str:
    """The innermost frames of our own code an error passed through, innermost first."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename and "/lib/python" not in f.filename]
    return " < ".join(
        f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
        for f in reversed((ours or frames)[-3:])
    )


class WorkerHeartbeat(Middleware):
    """Marks this worker alive in Redis every `interval` seconds, whatever it is doing, with its
    health (worker.runtime.liveness): threads that died, or no progress for `stall_after` seconds while
    messages are ready and a thread is free."""

    def __init__(self, interval: float, stall_after: float) -> None:
        self.interval, self.stall_after = interval, stall_after
        self.health: ProcessHealth | None = None
        #: A stop event per running Dramatiq Worker (tests run several in one process).
        self._stops: dict[int, threading.Event] = {}

    def after_worker_boot(self, broker, worker) -> None:
        self.health = ProcessHealth(worker, self.stall_after)
        self._stops[id(worker)] = stop = threading.Event()
        threading.Thread(target=self._run, args=(broker, stop), name="worker-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stops.pop(id(worker), threading.Event()).set()
        if broken(worker):  # a process stopping because its threads died leaves the reason behind
            self._beat(broker)

    def before_process_message(self, broker, message) -> None:
        if self.health:
            self.health.took(message.message_id)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if self.health:
            self.health.finished(message.message_id)

    def after_skip_message(self, broker, message) -> None:
        if self.health:
            self.health.finished(message.message_id)

    def before_delay_message(self, broker, message) -> None:
        if self.health:  # a consumer took a delayed message (on a .DQ queue): progress too
            self.health.finished()

    def _beat(self, broker) -> None:
        try:
            health = self.health
            record = health.record(ready_messages(broker, health.queues())) if health else {"ok": True}
            broker.beat(record)
        except Exception as e:  # Redis away: the consumers notice too; try again next beat
            log.warning("worker.heartbeat_failed", error=describe_error(e))

    def _run(self, broker, stop: threading.Event) -> None:
        while True:
            self._beat(broker)
            if stop.wait(self.interval):
                return
