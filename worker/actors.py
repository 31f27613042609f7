"""The actors. Each is thin: validate the payload, run one transaction, send follow-up messages.

Actors take ``*args, **kwargs`` and bind them to a payload model themselves, so a message with
the wrong arguments (say, from a non-Python producer) is a PoisonMessage, dead-lettered at once,
rather than a TypeError retried twenty times. What fails because of the database (down,
deadlock, timeout: db.errors) is retried with backoff by Dramatiq's Retries middleware; a derived
job that fails because of its data is narrowed down instead, so one user-day cannot hold back
the others of its message (``_narrow_down``).

Import this module only through ``worker.broker.setup_broker``: actors bind to the global broker
when they are declared.
"""

from __future__ import annotations

import time

import dramatiq
import structlog

from db.errors import is_transient
from jobs import recompute as recompute_jobs
from jobs import store as store_jobs
from jobs.heartbeat import validate_heartbeats
from worker.broker import installed_broker
from worker.database import get_engine
from worker.logs import describe_error, get_logger
from worker.messages import (
    HEARTBEATS_QUEUE,
    RECOMPUTE,
    STORE_ACTOR,
    PoisonMessage,
    RecomputePayload,
    StorePayload,
    parse_payload,
    recompute_message,
)
from worker.metrics import record_recompute, record_store
from worker.producer import send_recomputes
from worker.settings import get_settings

if installed_broker() is None:  # pragma: no cover - a wiring mistake, caught on first import
    raise RuntimeError("import worker.actors through worker.broker.setup_broker(), not directly")

log = get_logger("hbw.actors")


def _engine():
    settings = get_settings()
    return get_engine(settings.database_url, pool_size=settings.threads + 2)


def _follow_up(engine, items) -> int:
    """Send the derived-job messages for what this actor just committed.

    A failure here (Redis unreachable) does not fail the actor: its work is committed, and the
    pending rows it left are sent by the orphan sweeper later. Failing would only redo the work.
    """
    settings = get_settings()
    try:
        return send_recomputes(
            engine,
            items,
            keys_per_message=settings.recompute_keys_per_message,
            delay_ms=settings.recompute_delay_ms,
            batch_id=structlog.contextvars.get_contextvars().get("batch_id"),
        )
    except Exception as e:
        log.warning("derived.send_deferred", rows=len(items), error=describe_error(e))
        return 0


@dramatiq.actor(actor_name=STORE_ACTOR, queue_name=HEARTBEATS_QUEUE, throws=(PoisonMessage,))
def store_heartbeats(*args, **kwargs) -> None:
    """Store a batch of heartbeats; valid ones are kept even when others in the batch are not."""
    payload = parse_payload(StorePayload, args, kwargs)
    validated = validate_heartbeats(payload.heartbeats)
    engine = _engine()
    with engine.begin() as conn:
        result = store_jobs.store_heartbeats(conn, validated.accepted)
    sent = _follow_up(engine, result.to_enqueue)
    # Counts join the message's one summary line (worker.middleware.MessageLog).
    structlog.contextvars.bind_contextvars(
        received=len(payload.heartbeats),
        inserted=result.inserted,
        duplicates=result.duplicates,
        rejected=len(validated.rejected),
        recompute_messages=sent,
    )
    record_store(dramatiq.get_broker(), inserted=result.inserted, duplicates=result.duplicates,
                 rejected=len(validated.rejected))  # fmt: skip
    if validated.rejected:
        # The valid ones are stored; the message goes to the dead-letter queue with the reasons,
        # where retrying it stores nothing twice.
        shown = "; ".join(str(r) for r in validated.rejected[:5])
        more = f" (and {len(validated.rejected) - 5} more)" if len(validated.rejected) > 5 else ""
        raise PoisonMessage(f"{len(validated.rejected)} invalid heartbeat(s): {shown}{more}")


def _recompute(job: str, args: tuple, kwargs: dict) -> None:
    payload = parse_payload(RecomputePayload, args, kwargs)
    settings = get_settings()
    engine = _engine()
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            result = recompute_jobs.recompute(
                conn, job, payload.keys, timeout_us=settings.timeout_us, riders=not payload.alone
            )
    except Exception as e:
        if is_transient(e):  # the database, not the data: retried as it is
            raise
        _narrow_down(engine, job, payload, e)
        return
    record_recompute(job, len(result.recomputed), time.monotonic() - started)
    # User-days that gained heartbeats meanwhile are still pending: go round again.
    _follow_up(engine, [(job, *key) for key in result.rerun])
    structlog.contextvars.bind_contextvars(
        job=job,
        keys=len(payload.keys),
        recomputed=len(result.recomputed),
        changed=result.changed,
        rerun=len(result.rerun),
    )


def _narrow_down(engine, job: str, payload: RecomputePayload, error: Exception) -> None:
    """The message fails for a reason of its own: the users and days in it that do not fail must
    not wait for the one that does. It is retried in parts (jobs.recompute.narrow), and a single
    user-day that still fails is set aside and dead-lettered with the reason."""
    reason = describe_error(error, limit=1000)
    parts = recompute_jobs.narrow(payload.keys, alone=payload.alone)
    if not parts:
        with engine.begin() as conn:
            recompute_jobs.set_aside(conn, job, payload.keys, reason)
        [(user_id, day)] = payload.keys
        raise PoisonMessage(f"{job} of user {user_id!r} on {day} fails by itself: {reason}")
    batch_id = structlog.contextvars.get_contextvars().get("batch_id")
    broker = dramatiq.get_broker()
    for keys, alone in parts:
        broker.enqueue(recompute_message(job, keys, batch_id, alone=alone))
    structlog.contextvars.bind_contextvars(job=job, keys=len(payload.keys), narrowed_to=len(parts))
    log.warning("derived.narrowing_down", job=job, parts=len(parts), error=describe_error(error))


@dramatiq.actor(
    actor_name=RECOMPUTE["projects"][1], queue_name=RECOMPUTE["projects"][0], throws=(PoisonMessage,)
)
def recompute_projects(*args, **kwargs) -> None:
    """Project upsert: `project_days`, then `projects` totals."""
    _recompute("projects", args, kwargs)


@dramatiq.actor(
    actor_name=RECOMPUTE["languages"][1], queue_name=RECOMPUTE["languages"][0], throws=(PoisonMessage,)
)
def recompute_languages(*args, **kwargs) -> None:
    """Language tracking: `language_days`, then `project_languages` totals."""
    _recompute("languages", args, kwargs)


@dramatiq.actor(
    actor_name=RECOMPUTE["user_agents"][1], queue_name=RECOMPUTE["user_agents"][0], throws=(PoisonMessage,)
)
def recompute_user_agents(*args, **kwargs) -> None:
    """Version metadata: `user_agent_days`, then `user_agents` with the parsed parts."""
    _recompute("user_agents", args, kwargs)
