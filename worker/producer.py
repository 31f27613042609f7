"""Putting work on the queues.

:func:`enqueue_heartbeats` is the producer API an ingest service calls::

    from worker.runtime.broker import setup_broker
    from worker.producer import enqueue_heartbeats
    from worker.settings import get_settings

    setup_broker(get_settings())          # once, at startup
    result = enqueue_heartbeats(items)    # heartbeat dicts (WakaTime format + user_id): any iterable
    result.accepted, result.rejected      # rejected: [Rejection(index, reason), ...]

It validates every item (SPEC section 1), rejects the bad ones with their index and reason, and
enqueues the rest in messages of at most ``HBW_BATCH_SIZE`` heartbeats, each as soon as it is full:
it holds one batch at a time, so an iterator streams through in memory that does not grow with its
length (``hbw enqueue`` reads its input that way). If the broker fails part way,
:class:`EnqueueError` says how many heartbeats were enqueued before the failure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import dramatiq

from jobs.heartbeat import Rejection, validate_heartbeat
from worker.runtime.messages import store_message


class Rejections(Protocol):
    """Where rejections go: a list, or a sink that keeps a long stream of them out of memory."""

    def append(self, rejection: Rejection, /) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Rejection]: ...


@dataclass
class EnqueueResult:
    accepted: int = 0
    rejected: Rejections = field(default_factory=list)
    #: Messages put on the heartbeats queue, and the heartbeats they carry.
    messages: int = 0
    enqueued: int = 0
    #: Carried by this call's messages (and the derived jobs they cause) into every log line.
    batch_id: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when every item was accepted, 2 when some were rejected (the rest enqueued)."""
        return 2 if self.rejected else 0

    def write_json(self, stream: TextIO, **extra: Any) -> None:
        """The result (accepted, rejected, messages, enqueued, batch_id) plus `extra` as one JSON
        document, written a rejection at a time, so a long list of them never sits in memory as
        objects."""
        stream.write(f'{{"accepted": {self.accepted}, "rejected": [')
        for number, r in enumerate(self.rejected):
            stream.write((", " if number else "") + json.dumps({"index": r.index, "reason": r.reason}))
        rest = {"messages": self.messages, "enqueued": self.enqueued, "batch_id": self.batch_id, **extra}
        stream.write("], " + json.dumps(rest)[1:] + "\n")


class EnqueueError(Exception):
    """The broker failed; ``result.enqueued`` heartbeats had been enqueued before it did."""

    def __init__(self, result: EnqueueResult, cause: BaseException) -> None:
        self.result, self.cause = result, cause
        super().__init__(f"could not enqueue: {type(cause).__name__}: {cause} ({self.progress})")

    @property
    def progress(self) -> str:
        done, valid = self.result.enqueued, self.result.accepted
        return f"{done} of {valid} valid heartbeats were enqueued before the failure"


def enqueue_heartbeats(
    items: Iterable[Any],
    *,
    batch_size: int,
    broker: dramatiq.Broker | None = None,
    rejected: Rejections | None = None,
) -> EnqueueResult:
    """Validate `items` and enqueue the valid ones in batches as they come; see the module
    docstring. Rejections go to `rejected` (default: a new list), which becomes ``result.rejected``."""
    broker = broker or dramatiq.get_broker()
    result = EnqueueResult(rejected=[] if rejected is None else rejected, batch_id=uuid.uuid4().hex[:16])
    batch: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            batch.append(validate_heartbeat(item))
        except ValueError as e:
            result.rejected.append(Rejection(index, str(e)))
            continue
        result.accepted += 1
        if len(batch) == batch_size:
            _send(broker, batch, result)
            batch = []
    if batch:
        _send(broker, batch, result)
    return result


def _send(broker: dramatiq.Broker, batch: list[dict[str, Any]], result: EnqueueResult) -> None:
    try:
        broker.enqueue(store_message(batch, result.batch_id))
    except Exception as e:
        raise EnqueueError(result, e) from e
    result.messages += 1
    result.enqueued += len(batch)
