"""The actors. Each is thin: validate the payload, run one transaction, send follow-up messages.

* ``store_heartbeats`` (queue ``heartbeats``): raw rows and their deltas in one transaction, then
  a wake for the three derived jobs.
* ``update_projects``, ``update_languages``, ``update_user_agents`` (queues ``projects``,
  ``languages``, ``user_agents``): the project-upsert, language-tracking and version-metadata jobs,
  each applying the deltas waiting for it, many users per transaction, until none are left.
* ``recompute_days`` (queue ``recompute``): reprocessing and backfill, user-days recomputed from
  the raw heartbeats.

Actors take ``*args, **kwargs`` and bind them to a payload model themselves, so a message with
the wrong arguments (say, from a non-Python producer) is a PoisonMessage, dead-lettered at once,
rather than a TypeError retried twenty times. What fails because of the database (down,
deadlock, timeout: db.errors) is retried with backoff by Dramatiq's Retries middleware; derived
work that fails because of its data is narrowed down instead, so one user or user-day cannot hold
back the others (``_narrow_down``).

Import this module only through ``worker.runtime.broker.setup_broker``: actors bind to the global broker
when they are declared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dramatiq
import redis
import structlog

from db.deltas import select_delta_users
from db.errors import describe_error, is_transient
from jobs import deltas as delta_jobs
from jobs import recompute as recompute_jobs
from jobs import store as store_jobs
from jobs.heartbeat import validate_heartbeats
from worker.database import get_engine
from worker.logs import get_logger
from worker.runtime.broker import installed_broker
from worker.runtime.consumer import hand_back, settle, take_ready
from worker.runtime.messages import (
    DERIVED,
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
from worker.settings import get_settings

if installed_broker() is None:  # pragma: no cover - a wiring mistake, caught on first import
    raise RuntimeError(
        "import worker.runtime.actors through worker.runtime.broker.setup_broker(), not directly"
    )

log = get_logger("hbw.actors")

#: An updater keeps applying batches for this long, then hands on to a fresh message (so a long
#: backlog never holds one message, and other queues' messages get the thread in between).
UPDATE_BUDGET_S = 2.0


def _engine():
    settings = get_settings()
    return get_engine(settings.database_url, pool_size=settings.threads + 2)


def _batch_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("batch_id")


@dramatiq.actor(actor_name=STORE_ACTOR, queue_name=HEARTBEATS_QUEUE, throws=(PoisonMessage,))
def store_heartbeats(*args, **kwargs) -> None:
    """Store a batch of heartbeats, with the other store messages ready now (or within
    HBW_STORE_LINGER_MS) in the same transaction; valid heartbeats are kept even when others of
    their message are not."""
    own = validate_heartbeats(parse_payload(StorePayload, args, kwargs).heartbeats)
    settings, broker = get_settings(), dramatiq.get_broker()
    others = _gather(broker, settings.batch_size - len(own.accepted), settings.store_linger_ms / 1000)
    try:
        parts = [(message, _validated(message)) for message in others]
        accepted = own.accepted + [hb for _, part in parts if part.accepted for hb in part.accepted]
        with _engine().begin() as conn:
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
        wake(broker, list(DERIVED), delay_ms=settings.recompute_delay_ms, batch_id=_batch_id())
    except Exception as e:  # committed: the sweeper wakes them later; failing would redo nothing
        log.warning("derived.wake_deferred", error=describe_error(e))
    received = len(own.accepted) + len(own.rejected) + sum(part.received for _, part in parts)
    rejected = len(own.rejected) + sum(part.received - len(part.accepted) for _, part in parts)
    duplicates = len(accepted) - result.inserted
    # Counts join the message's one summary line (worker.runtime.middleware.MessageLog).
    structlog.contextvars.bind_contextvars(received=received, inserted=result.inserted, duplicates=duplicates,
                                           rejected=rejected, batched_messages=len(others))  # fmt: skip
    record_store(broker, inserted=result.inserted, duplicates=duplicates, rejected=rejected,
                 messages=len(others), dead_lettered=len(failed))  # fmt: skip
    if reason := _rejections(own):
        # The valid ones are stored; the message goes to the dead-letter queue with the reasons,
        # where retrying it stores nothing twice.
        raise PoisonMessage(reason)


#: Store messages one transaction takes at most (beside HBW_BATCH_SIZE heartbeats).
MESSAGES_PER_STORE = 100


def _gather(broker, room: int, linger: float) -> list[dramatiq.Message]:
    """Ready store messages to take along, up to `room` heartbeats; when few are ready, wait up to
    `linger` seconds for more, in one sleep (polling meanwhile would cost more than it saves)."""
    taken: list[dramatiq.Message] = []
    deadline = time.monotonic() + linger
    while room > 0 and len(taken) < MESSAGES_PER_STORE:
        try:
            got = take_ready(broker, HEARTBEATS_QUEUE, min(8, MESSAGES_PER_STORE - len(taken)))
        except redis.RedisError as e:  # Redis away: store what was taken (the rest is handed back later)
            log.warning("batch.gather_stopped", taken=len(taken), error=describe_error(e))
            break
        taken += got
        room -= sum(len(m.args[0]) if m.args and isinstance(m.args[0], list) else 1 for m in got)
        if not got:
            if time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, deadline - time.monotonic()))
    return taken


@dataclass(frozen=True, slots=True)
class _Part:
    """A taken store message: its valid heartbeats, how many it carried, and why it goes to the dead
    letters once they are stored (None: it does not)."""

    accepted: list
    received: int
    reason: str | None


def _validated(message: dramatiq.Message) -> _Part:
    try:
        heartbeats = parse_payload(StorePayload, message.args, message.kwargs).heartbeats
    except PoisonMessage as e:
        return _Part([], 0, str(e))
    validated = validate_heartbeats(heartbeats)
    return _Part(validated.accepted, len(heartbeats), _rejections(validated))


def _rejections(validated) -> str | None:
    if not validated.rejected:
        return None
    shown = "; ".join(str(r) for r in validated.rejected[:5])
    more = f" (and {len(validated.rejected) - 5} more)" if len(validated.rejected) > 5 else ""
    return f"{len(validated.rejected)} invalid heartbeat(s): {shown}{more}"


def _update(job: str, args: tuple, kwargs: dict) -> None:
    payload = parse_payload(UpdatePayload, args, kwargs)
    broker, engine = dramatiq.get_broker(), _engine()
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
            _narrow_updates(engine, job, payload, e)
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


def _narrow_updates(engine, job: str, payload: UpdatePayload, error: Exception) -> None:
    """A batch fails for a reason of its own: one message per user retries it; a single user's
    deltas that still fail are set aside and the message dead-lettered with the reason."""
    reason = describe_error(error, limit=1000)
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
    broker = dramatiq.get_broker()
    for users in parts:
        broker.enqueue(update_message(job, users, _batch_id()))
    structlog.contextvars.bind_contextvars(job=job, narrowed_to=len(parts))
    log.warning("derived.narrowing_down", job=job, parts=len(parts), error=describe_error(error))


@dramatiq.actor(actor_name=DERIVED["projects"][1], queue_name=DERIVED["projects"][0], throws=(PoisonMessage,))
def update_projects(*args, **kwargs) -> None:
    """Project upsert: deltas into `project_days`, then the `projects` totals."""
    _update("projects", args, kwargs)


@dramatiq.actor(
    actor_name=DERIVED["languages"][1], queue_name=DERIVED["languages"][0], throws=(PoisonMessage,)
)
def update_languages(*args, **kwargs) -> None:
    """Language tracking: deltas into `language_days`, then the `project_languages` totals."""
    _update("languages", args, kwargs)


@dramatiq.actor(
    actor_name=DERIVED["user_agents"][1], queue_name=DERIVED["user_agents"][0], throws=(PoisonMessage,)
)
def update_user_agents(*args, **kwargs) -> None:
    """Version metadata: deltas into `user_agent_days`, then `user_agents` with the parsed parts."""
    _update("user_agents", args, kwargs)


@dramatiq.actor(actor_name=RECOMPUTE_ACTOR, queue_name=RECOMPUTE_QUEUE, throws=(PoisonMessage,))
def recompute_days(*args, **kwargs) -> None:
    """Reprocessing: these user-days' derived rows recomputed from the raw heartbeats."""
    payload = parse_payload(RecomputePayload, args, kwargs)
    settings = get_settings()
    engine = _engine()
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            result = recompute_jobs.recompute(
                conn, payload.keys, timeout_us=settings.timeout_us, riders=not payload.alone
            )
    except Exception as e:
        if is_transient(e):  # the database, not the data: retried as it is
            raise
        _narrow_recompute(engine, payload, e)
        return
    record_recompute(len(result.recomputed), time.monotonic() - started)
    # User-days marked stale again meanwhile: go round again.
    if result.rerun:
        try:
            send_recomputes(engine, result.rerun, keys_per_message=settings.recompute_keys_per_message,
                            batch_id=_batch_id())  # fmt: skip
        except Exception as e:  # committed: the sweeper sends them later
            log.warning("derived.send_deferred", rows=len(result.rerun), error=describe_error(e))
    structlog.contextvars.bind_contextvars(
        keys=len(payload.keys),
        recomputed=len(result.recomputed),
        changed=result.changed,
        rerun=len(result.rerun),
    )


def _narrow_recompute(engine, payload: RecomputePayload, error: Exception) -> None:
    """The message fails for a reason of its own: the users and days in it that do not fail must
    not wait for the one that does. It is retried in parts (jobs.recompute.narrow), and a single
    user-day that still fails is set aside and dead-lettered with the reason."""
    reason = describe_error(error, limit=1000)
    parts = recompute_jobs.narrow(payload.keys, alone=payload.alone)
    if not parts:
        with engine.begin() as conn:
            recompute_jobs.set_aside(conn, payload.keys, reason)
        [(user_id, day)] = payload.keys
        raise PoisonMessage(f"recomputing user {user_id!r} on {day} fails by itself: {reason}")
    broker = dramatiq.get_broker()
    for keys, alone in parts:
        broker.enqueue(recompute_message(keys, _batch_id(), alone=alone))
    structlog.contextvars.bind_contextvars(keys=len(payload.keys), narrowed_to=len(parts))
    log.warning("derived.narrowing_down", job="recompute", parts=len(parts), error=describe_error(error))
