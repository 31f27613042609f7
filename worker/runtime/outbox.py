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
* **Sweeping** (:class:`OrphanSweeper`). If a process dies between its commit and its messages,
  or Redis loses messages (no persistence), the work would wait forever. Each worker process
  sweeps now and then, for the work of the queues it consumes: deltas waiting longer than
  `min_age` wake their job again, and stale days never sent for `min_age`, or sent longer than
  `stale_after` ago, get a new message. Duplicates are harmless: an updater or a recomputation
  that finds nothing to do does nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Middleware

from db import deltas as db_deltas
from db import stale as db_stale
from db.queries import Key
from jobs.heartbeat import chunked
from worker.logs import get_logger
from worker.runtime.messages import recompute_message, update_message
from worker.runtime.redis_keys import Keys

log = get_logger("hbw.outbox")

#: A wake key outlives its message's delay by this much (a message stuck in a backlog longer than
#: that only means one more wake).
WAKE_MARGIN_MS = 60_000


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
            pipe.set(Keys(broker.namespace).wake(job), 1, nx=True, px=delay_ms + WAKE_MARGIN_MS)
        jobs = [job for job, was_set in zip(jobs, pipe.execute(), strict=True) if was_set]
    for job in jobs:
        broker.enqueue(update_message(job, batch_id=batch_id), delay=delay_ms or None)
    return len(jobs)


def woken(broker: dramatiq.Broker, job: str) -> None:
    """An updater starts: deltas stored from now on need a new wake."""
    broker.client.delete(Keys(broker.namespace).wake(job))


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


def recompute_sender(engine: sa.Engine, broker: dramatiq.Broker, *, keys_per_message: int):
    """send_recomputes as the one-argument `send` a run takes (jobs.runs)."""
    return lambda keys: send_recomputes(engine, keys, keys_per_message=keys_per_message, broker=broker)


class OrphanSweeper(Middleware):
    def __init__(
        self,
        engine: Callable[[], sa.Engine],
        broker: dramatiq.Broker,
        *,
        jobs: Sequence[str],
        recompute: bool,
        keys_per_message: int,
        interval: float = 30.0,
        min_age: dt.timedelta = dt.timedelta(minutes=1),
        stale_after: dt.timedelta = dt.timedelta(minutes=15),
    ) -> None:
        self.engine, self.broker = engine, broker
        self.jobs, self.recompute = list(jobs), recompute
        self.keys_per_message = keys_per_message
        self.interval, self.min_age, self.stale_after = interval, min_age, stale_after
        self._stop = threading.Event()

    def sweep(self, *, everything: bool = False) -> int:
        """Send messages for orphaned work; `everything` when no message can be in flight.
        Returns the messages sent."""
        zero = dt.timedelta(0)
        sent = 0
        with self.engine().begin() as conn:
            backlog = db_deltas.select_backlog(conn) if self.jobs else {}
            keys = (
                db_stale.claim_orphans(
                    conn,
                    min_age=zero if everything else self.min_age,
                    stale_after=zero if everything else self.stale_after,
                )
                if self.recompute
                else []
            )
        late = [
            job
            for job in self.jobs
            if backlog.get(job, (0, None, 0))[0]
            and (everything or (backlog[job][1] or 0) >= self.min_age.total_seconds())
        ]
        if late:
            sent += wake(self.broker, late, delay_ms=0, force=everything)
        if keys:
            sent += send_recomputes(
                self.engine(), keys, keys_per_message=self.keys_per_message, broker=self.broker
            )
        if sent:
            log.info("derived.swept", woken=late, stale_days=len(keys))
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a database or Redis outage: try again next round
                log.warning("derived.sweep_failed", exc_info=True)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        threading.Thread(target=self._run, name="orphan-sweeper", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
