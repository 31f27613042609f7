"""Turning derived work in PostgreSQL into messages (the outbox's other half).

* **Wakes.** A store leaves deltas in derived_deltas; each derived job's updater applies whoever's
  are waiting, many users at a time. After committing, a store wakes the three jobs: one message
  per job per debounce window (``HBW_RECOMPUTE_DELAY_MS``), however many stores come meanwhile,
  decided by a Redis key set with NX that the updater deletes when it starts (so a store that
  commits after it starts wakes it again). A lost wake costs nothing but time: the key expires,
  and the sweeper wakes a job whose deltas wait too long.
* **Recomputations.** Reprocessing marks user-days stale; each needs a recompute message, sent
  after the marking commits and then recorded as sent; the sweeper resends what was never sent or
  whose message was lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
import sqlalchemy as sa

from db import stale as db_stale
from db.queries import Key
from jobs.heartbeat import chunked
from worker.runtime.messages import recompute_message, update_message

#: A wake key outlives its message's delay by this much (a message stuck in a backlog longer than
#: that only means one more wake).
WAKE_MARGIN_MS = 60_000


def _wake_key(broker: dramatiq.Broker, job: str) -> str:
    return f"{broker.namespace}:hbw.wake.{job}"


def wake(
    broker: dramatiq.Broker,
    jobs: Sequence[str],
    *,
    delay_ms: int,
    force: bool = False,
    batch_id: str | None = None,
) -> int:
    """Wake these jobs' updaters in `delay_ms`, unless a wake is already on its way (`force`: even
    then). Returns the messages sent."""
    if not force:
        pipe = broker.client.pipeline(transaction=False)
        for job in jobs:
            pipe.set(_wake_key(broker, job), 1, nx=True, px=delay_ms + WAKE_MARGIN_MS)
        jobs = [job for job, was_set in zip(jobs, pipe.execute(), strict=True) if was_set]
    for job in jobs:
        broker.enqueue(update_message(job, batch_id=batch_id), delay=delay_ms or None)
    return len(jobs)


def woken(broker: dramatiq.Broker, job: str) -> None:
    """An updater starts: deltas stored from now on need a new wake."""
    broker.client.delete(_wake_key(broker, job))


def send_recomputes(
    engine: sa.Engine,
    keys: Sequence[Key],
    *,
    keys_per_message: int,
    broker: dramatiq.Broker | None = None,
    batch_id: str | None = None,
) -> int:
    """Send recompute messages for stale user-days, then record them as sent.

    Called after the transaction that marked them stale has committed. If this process dies
    before recording, the sweeper sends them again; a recomputation of a day no longer stale
    finds nothing to do.
    """
    if not keys:
        return 0
    broker = broker or dramatiq.get_broker()
    sent = 0
    for chunk in chunked(sorted(set(keys)), keys_per_message):
        broker.enqueue(recompute_message(chunk, batch_id))
        sent += 1
    with engine.begin() as conn:
        db_stale.mark_enqueued(conn, keys)
    return sent
