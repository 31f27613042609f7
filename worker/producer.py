"""Putting work on the queues.

:func:`enqueue_heartbeats` is the producer API an ingest service calls::

    from worker.broker import setup_broker
    from worker.producer import enqueue_heartbeats
    from worker.settings import get_settings

    setup_broker(get_settings())          # once, at startup
    result = enqueue_heartbeats(items)    # a list of heartbeat dicts (WakaTime format + user_id)
    result.accepted, result.rejected      # rejected: [Rejection(index, reason), ...]

It validates every item (SPEC section 1), rejects the bad ones with their index and reason, and
enqueues the rest in messages of at most ``HBW_BATCH_SIZE`` heartbeats. If the broker fails part
way, :class:`EnqueueError` says how many heartbeats were enqueued before the failure.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import sqlalchemy as sa

from db import pending as db_pending
from db.queries import JobKey
from jobs.heartbeat import Rejection, chunked, validate_heartbeats
from worker.messages import recompute_message, store_message


@dataclass
class EnqueueResult:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    #: Messages put on the heartbeats queue, and the heartbeats they carry.
    messages: int = 0
    enqueued: int = 0
    #: Carried by this call's messages (and the derived jobs they cause) into every log line.
    batch_id: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when every item was accepted, 2 when some were rejected (the rest enqueued)."""
        return 2 if self.rejected else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": [{"index": r.index, "reason": r.reason} for r in self.rejected],
            "messages": self.messages,
            "enqueued": self.enqueued,
            "batch_id": self.batch_id,
        }


class EnqueueError(Exception):
    """The broker failed; ``result.enqueued`` heartbeats had been enqueued before it did."""

    def __init__(self, result: EnqueueResult, cause: BaseException) -> None:
        super().__init__(
            f"could not enqueue: {type(cause).__name__}: {cause} "
            f"({result.enqueued} of {result.accepted} valid heartbeats were enqueued before the failure)"
        )
        self.result = result


def enqueue_heartbeats(
    items: Iterable[Any], *, batch_size: int, broker: dramatiq.Broker | None = None
) -> EnqueueResult:
    """Validate `items` and enqueue the valid ones in batches; see the module docstring."""
    broker = broker or dramatiq.get_broker()
    validated = validate_heartbeats(items)
    result = EnqueueResult(accepted=len(validated.accepted), rejected=validated.rejected)
    result.batch_id = uuid.uuid4().hex[:16]
    for batch in chunked(validated.accepted, batch_size):
        try:
            broker.enqueue(store_message(list(batch), result.batch_id))
        except Exception as e:
            raise EnqueueError(result, e) from e
        result.messages += 1
        result.enqueued += len(batch)
    return result


def send_recomputes(
    engine: sa.Engine,
    items: Sequence[JobKey],
    *,
    keys_per_message: int,
    delay_ms: int | None = None,
    broker: dramatiq.Broker | None = None,
    batch_id: str | None = None,
) -> int:
    """Send derived-job messages for pending (job, user, day) rows, then record them as sent.

    Called after the transaction that made them pending has committed. If this process dies
    before recording, the rows stay unsent and the next store of the same user-day, or the
    orphan sweeper, sends them again; the job coalesces duplicates. With `delay_ms` the job runs
    that much later, so the stores that arrive meanwhile share one recomputation.
    """
    if not items:
        return 0
    broker = broker or dramatiq.get_broker()
    by_job: dict[str, list[tuple[str, dt.date]]] = defaultdict(list)
    for job, user_id, day in items:
        by_job[job].append((user_id, day))
    sent = 0
    for job, keys in sorted(by_job.items()):
        for chunk in chunked(sorted(set(keys)), keys_per_message):
            broker.enqueue(recompute_message(job, chunk, batch_id), delay=delay_ms or None)
            sent += 1
    with engine.begin() as conn:
        db_pending.mark_enqueued(conn, items)
    return sent
