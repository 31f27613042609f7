"""Our Dramatiq middleware: per-message log context, one summary line per message, and a loud
structured line for every dead-lettered message."""

from __future__ import annotations

import time

import dramatiq
import structlog
from dramatiq.middleware import Middleware

from worker.logs import get_logger

log = get_logger("hbw.messages")


class MessageLog(Middleware):
    """Binds the message id and actor to every log line of a message, and logs its outcome.

    Listed before Retries, so its ``after_process_message`` runs after Retries' (Dramatiq runs
    after-hooks in reverse): a message that will not be retried is already marked failed.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(message_id=message.message_id, actor=message.actor_name)
        message.options["hbw_started"] = time.monotonic()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result=None, exception=None
    ) -> None:
        started = message.options.pop("hbw_started", None)
        duration_ms = round((time.monotonic() - started) * 1000, 1) if started else None
        try:
            if exception is None:
                log.info("message.done", duration_ms=duration_ms)
            elif message.failed:
                log.error(
                    "message.dead_lettered",
                    duration_ms=duration_ms,
                    error=f"{type(exception).__name__}: {exception}",
                    retries=message.options.get("retries", 0),
                    queue=message.queue_name,
                )
            else:
                log.warning(
                    "message.retrying",
                    duration_ms=duration_ms,
                    error=f"{type(exception).__name__}: {exception}",
                    retries=message.options.get("retries", 0),
                )
        finally:
            structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        message.options.pop("hbw_started", None)
        if message.failed:
            log.error("message.dead_lettered", error="skipped", queue=message.queue_name)
        structlog.contextvars.clear_contextvars()
