"""One structlog chain for our events and for Dramatiq's (stdlib) logs.

JSON lines when stderr is not a terminal (production, CI, log shippers), readable colored lines
in a terminal; ``HBW_LOG_FORMAT`` overrides. Our events are dotted names with data as keywords
(``log.info("heartbeats.stored", inserted=12)``); context bound with ``bind_contextvars`` (the
message id, per message) appears on every line until cleared.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from dramatiq import Message, MessageProxy

_MESSAGE_TYPES = (Message, MessageProxy)

_SHARED: list = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not _isatty(stream))
    renderer = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    )
    final = [structlog.processors.format_exc_info, renderer] if as_json else [renderer]

    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.addFilter(_without_payloads)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # Dramatiq logs every enqueue and ack at DEBUG; keep those unless asked for.
    logging.getLogger("dramatiq").setLevel(level.upper())


def _without_payloads(record: logging.LogRecord) -> bool:
    """Keep message payloads out of Dramatiq's own log lines.

    Dramatiq formats a message as ``actor(args...)``, which for a store message is the whole
    batch (file paths, projects, machines: ~0.5 MB a line). Messages become ``actor#message_id``,
    and its "Failed to process message" lines (traceback included) are dropped: our
    ``message.retrying`` / ``message.dead_lettered`` line says the same with the reason only.
    """
    if record.name.startswith("dramatiq.worker") and str(record.msg).startswith("Failed to process message"):
        return False
    if isinstance(record.args, tuple) and any(isinstance(a, _MESSAGE_TYPES) for a in record.args):
        record.args = tuple(
            f"{a.actor_name}#{a.message_id}" if isinstance(a, _MESSAGE_TYPES) else a for a in record.args
        )
    return True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
