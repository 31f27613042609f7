"""A store transaction takes along the other store messages that are ready (worker.runtime.actors):
live traffic arrives in small messages, and one transaction of many costs far less than many of
one. Taken messages are this worker's until the store settles them (worker.runtime.consumer)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import dramatiq
import redis

from db.errors import describe_error
from jobs.heartbeat import validate_heartbeats
from worker.logs import get_logger
from worker.runtime.consumer import take_ready
from worker.runtime.messages import HEARTBEATS_QUEUE, PoisonMessage, StorePayload, parse_payload

log = get_logger("hbw.actors")


#: Store messages one transaction takes at most (beside HBW_BATCH_SIZE heartbeats).
MESSAGES_PER_STORE = 100


def gather(broker, room: int, linger: float) -> list[dramatiq.Message]:
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
class Part:
    """A taken store message: its valid heartbeats, how many it carried, and why it goes to the dead
    letters once they are stored (None: it does not)."""

    accepted: list
    received: int
    reason: str | None


def validated(message: dramatiq.Message) -> Part:
    """A taken message, parsed and validated like the actor's own payload."""
    try:
        heartbeats = parse_payload(StorePayload, message.args, message.kwargs).heartbeats
    except PoisonMessage as e:
        return Part([], 0, str(e))
    checked = validate_heartbeats(heartbeats)
    return Part(checked.accepted, len(heartbeats), rejections(checked))


def rejections(checked) -> str | None:
    """Why a store message goes to the dead letters once its valid heartbeats are stored."""
    if not checked.rejected:
        return None
    shown = "; ".join(str(r) for r in checked.rejected[:5])
    more = f" (and {len(checked.rejected) - 5} more)" if len(checked.rejected) > 5 else ""
    return f"{len(checked.rejected)} invalid heartbeat(s): {shown}{more}"
