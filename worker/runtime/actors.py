"""The actors. Each is thin: validate the payload, run one transaction, send follow-up messages.

* ``store_heartbeats`` (queue ``heartbeats``): raw rows and their deltas in one transaction, then
  a wake for the three derived jobs.
* ``update_derived``, declared once per derived job of db.derived_jobs (``update_projects``,
  ``update_languages``, ``update_user_agents`` on queues of the same names): the project-upsert,
  language-tracking and version-metadata jobs, each applying the deltas waiting for it, many users
  per transaction, until none are left.
* ``recompute_days`` (queue ``recompute``): reprocessing and backfill, user-days recomputed from
  the raw heartbeats.

Actors take ``*args, **kwargs`` and bind them to a payload model themselves, so a message with
the wrong arguments (say, from a non-Python producer) is a PoisonMessage, dead-lettered at once,
rather than a TypeError retried twenty times. What fails because of the database (down,
deadlock, timeout: db.errors) is retried with backoff by Dramatiq's Retries middleware; derived
work that fails because of its data is narrowed down instead, so one user or user-day cannot hold
back the others (``_narrow_updates``, ``_narrow_recompute``).

The actors are plain functions of their dependencies (:class:`Deps`: the broker and the
settings) and the message's arguments; :func:`declare_actors` declares them on a broker with
``dramatiq.actor(..., broker=broker)``, so this module imports nothing that imports it back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import dramatiq
import redis
import sqlalchemy as sa
import structlog

from db.deltas import select_delta_users
from db.derived_jobs import DERIVED_JOBS
from db.errors import describe_error, is_transient
from jobs import deltas as delta_jobs
from jobs import recompute as recompute_jobs
from jobs import store as store_jobs
from jobs.heartbeat import validate_heartbeats
from worker.database import get_engine
from worker.logs import get_logger
from worker.runtime.consumer import hand_back, settle
from worker.runtime.gather import gather, rejections, validated
from worker.runtime.messages import (
    HEARTBEATS_QUEUE,
    RECOMPUTE_ACTOR,
    RECOMPUTE_QUEUE,
    STORE_ACTOR,
    PoisonMessage,
    RecomputePayload,
    StorePayload,
    UpdatePayload,
    parse_payload,
    recompute_message,
    update_message,
)
from worker.runtime.metrics import record_recompute, record_store, record_update
from worker.runtime.outbox import send_recomputes, wake, woken
from worker.settings import Settings

log = get_logger("hbw.actors")

#: An updater keeps applying batches for this long, then hands on to a fresh message (so a long
#: backlog never holds one message, and other queues' messages get the thread in between).
UPDATE_BUDGET_S = 2.0


@dataclass(frozen=True, slots=True)
class Deps:
    """What the actors work with, handed in when they are declared."""

    broker: dramatiq.Broker
    settings: Settings
    #: The database (a function: the pool is made in the worker process, on first use).
    engine: Callable[[], sa.Engine]


def _batch_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("batch_id")


def store_heartbeats(deps: Deps, *args, **kwargs) -> None:
    """Store a batch of heartbeats, with the other store messages ready now (or within
    HBW_STORE_LINGER_MS) in the same transaction; valid heartbeats are kept even when others of
    their message are not."""
    own = validate_heartbeats(parse_payload(StorePayload, args, kwargs).heartbeats)
    settings, broker = deps.settings, deps.broker
    others = gather(broker, settings.batch_size - len(own.accepted), settings.store_linger_ms / 1000)
    try:
        parts = [(message, validated(message)) for message in others]
        accepted = own.accepted + [hb for _, part in parts if part.accepted for hb in part.accepted]
        with deps.engine().begin() as conn:
            result = store_jobs.store_heartbeats(conn, accepted, timeout_us=settings.timeout_us)
    except Exception:
        hand_back(broker, HEARTBEATS_QUEUE, others)  # each runs again on its own
        raise
    failed = [(m, f"PoisonMessage: {part.reason}") for m, part in parts if part.reason]
    try:
        settle(broker, HEARTBEATS_QUEUE, [m for m, part in parts if not part.reason], failed)
    except redis.RedisError as e:  # committed: the consumer hands the unsettled ones back, which run again
        log.warning("batch.settle_deferred", messages=len(others), error=describe_error(e))
    try:  # (also after a redelivery that stored nothing: the first delivery may not have woken them)
        wake(
            broker,
            [job.name for job in DERIVED_JOBS],
            delay_ms=settings.recompute_delay_ms,
            batch_id=_batch_id(),
        )
    except Exception as e:  # committed: the sweeper wakes them later; failing would redo nothing
        log.warning("derived.wake_deferred", error=describe_error(e))
    received = len(own.accepted) + len(own.rejected) + sum(part.received for _, part in parts)
    rejected = len(own.rejected) + sum(part.received - len(part.accepted) for _, part in parts)
    duplicates = len(accepted) - result.inserted
    # Counts join the message's one summary line (worker.runtime.middleware.MessageLog).
    structlog.contextvars.bind_contextvars(
        received=received,
        inserted=result.inserted,
        duplicates=duplicates,
        rejected=rejected,
        batched_messages=len(others),
    )
    record_store(
        broker,
        inserted=result.inserted,
        duplicates=duplicates,
        rejected=rejected,
        messages=len(others),
        dead_lettered=len(failed),
    )
    if reason := rejections(own):
        # The valid ones are stored; the message goes to the dead-letter queue with the reasons,
        # where retrying it stores nothing twice.
        raise PoisonMessage(reason)


def update_derived(deps: Deps, job: str, *args, **kwargs) -> None:
    """One derived job (db.derived_jobs): the deltas waiting for it into its day rows and totals,
    many users per transaction, until none are left (or its time budget is spent)."""
    payload = parse_payload(UpdatePayload, args, kwargs)
    broker, engine = deps.broker, deps.engine()
    if payload.users is None:
        woken(broker, job)
    started, users, rows = time.monotonic(), 0, 0
    while True:
        try:
            with engine.begin() as conn:
                result = delta_jobs.apply(conn, job, users=payload.users)
        except Exception as e:
            if is_transient(e):  # the database, not the data: retried as it is
                raise
            _narrow_updates(deps, job, payload, e)
            return
        users, rows = users + len(result.users), rows + result.rows
        # (Deltas committed after `woken` above come with a wake of their own.)
        if payload.users is not None or not result.users or not result.more:
            break
        if time.monotonic() - started > UPDATE_BUDGET_S:  # more waiting: a fresh message goes on
            wake(broker, [job], delay_ms=0, force=True)
            break
    record_update(job, users, time.monotonic() - started)
    structlog.contextvars.bind_contextvars(job=job, users=users, deltas=rows)


def _narrow_updates(deps: Deps, job: str, payload: UpdatePayload, error: Exception) -> None:
    """A batch fails for a reason of its own: one message per user retries it; a single user's
    deltas that still fail are set aside and the message dead-lettered with the reason."""
    reason, engine = describe_error(error, limit=1000), deps.engine()
    if payload.users is None:
        with engine.connect() as conn:  # the batch that failed took the oldest deltas' users
            tried = list(select_delta_users(conn, job, limit=delta_jobs.ROWS_PER_BATCH))
    else:
        tried = payload.users
    parts = delta_jobs.narrow(payload.users, tried)
    if not parts:
        with engine.begin() as conn:
            delta_jobs.set_aside(conn, job, payload.users, reason)
        raise PoisonMessage(f"{job} of user {payload.users[0]!r} fails by itself: {reason}")
    for users in parts:
        deps.broker.enqueue(update_message(job, users, _batch_id()))
    structlog.contextvars.bind_contextvars(job=job, narrowed_to=len(parts))
    log.warning("derived.narrowing_down", job=job, parts=len(parts), error=describe_error(error))


def recompute_days(deps: Deps, *args, **kwargs) -> None:
    """Reprocessing: these user-days' derived rows recomputed from the raw heartbeats."""
    payload = parse_payload(RecomputePayload, args, kwargs)
    settings, engine = deps.settings, deps.engine()
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            result = recompute_jobs.recompute(
                conn, payload.keys, timeout_us=settings.timeout_us, riders=not payload.alone
            )
    except Exception as e:
        if is_transient(e):  # the database, not the data: retried as it is
            raise
        _narrow_recompute(deps, payload, e)
        return
    record_recompute(len(result.recomputed), time.monotonic() - started)
    # User-days marked stale again meanwhile: go round again.
    if result.rerun:
        try:
            send_recomputes(
                engine,
                result.rerun,
                keys_per_message=settings.recompute_keys_per_message,
                broker=deps.broker,
                batch_id=_batch_id(),
            )
        except Exception as e:  # committed: the sweeper sends them later
            log.warning("derived.send_deferred", rows=len(result.rerun), error=describe_error(e))
    structlog.contextvars.bind_contextvars(
        keys=len(payload.keys),
        recomputed=len(result.recomputed),
        changed=result.changed,
        rerun=len(result.rerun),
    )


def _narrow_recompute(deps: Deps, payload: RecomputePayload, error: Exception) -> None:
    """The message fails for a reason of its own: the users and days in it that do not fail must
    not wait for the one that does. It is retried in parts (jobs.recompute.narrow), and a single
    user-day that still fails is set aside and dead-lettered with the reason."""
    reason = describe_error(error, limit=1000)
    parts = recompute_jobs.narrow(payload.keys, alone=payload.alone)
    if not parts:
        with deps.engine().begin() as conn:
            recompute_jobs.set_aside(conn, payload.keys, reason)
        [(user_id, day)] = payload.keys
        raise PoisonMessage(f"recomputing user {user_id!r} on {day} fails by itself: {reason}")
    for keys, alone in parts:
        deps.broker.enqueue(recompute_message(keys, _batch_id(), alone=alone))
    structlog.contextvars.bind_contextvars(keys=len(payload.keys), narrowed_to=len(parts))
    log.warning("derived.narrowing_down", job="recompute", parts=len(parts), error=describe_error(error))


def declare_actors(
    broker: dramatiq.Broker, settings: Settings, *, engine: Callable[[], sa.Engine] | None = None
) -> dict[str, dramatiq.Actor]:
    """Declare every actor on `broker`, bound to its dependencies (`engine`: the one DATABASE_URL
    names); returns them by actor name."""

    def default_engine() -> sa.Engine:
        return get_engine(settings.database_url, pool_size=settings.threads + 2)

    deps = Deps(broker, settings, engine or default_engine)
    bound = [(_bind(store_heartbeats, deps), STORE_ACTOR, HEARTBEATS_QUEUE)]
    bound += [(_bind(update_derived, deps, job.name), job.actor, job.queue) for job in DERIVED_JOBS]
    bound.append((_bind(recompute_days, deps), RECOMPUTE_ACTOR, RECOMPUTE_QUEUE))
    return {
        name: dramatiq.actor(fn, actor_name=name, queue_name=queue, broker=broker, throws=(PoisonMessage,))
        for fn, name, queue in bound
    }


def _bind(fn: Callable[..., None], *front) -> Callable[..., None]:
    """`fn` with its first arguments given, named as it is (Dramatiq logs under its module)."""

    @functools.wraps(fn)
    def actor(*args, **kwargs) -> None:
        fn(*front, *args, **kwargs)

    return actor
