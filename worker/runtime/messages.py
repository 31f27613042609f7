"""The message contract: queues, actor names and payloads (documented in docs/producers.md).

Producers build messages from here without importing actor code, and actors validate what they
receive against the same models, because a producer may be written in another language.
Arguments are plain JSON: a list of heartbeat objects (store), nothing or a list of user ids
(the derived jobs' updates), or a list of ``[user_id, "YYYY-MM-DD"]`` (recomputation).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import dramatiq
import orjson
from dramatiq.common import q_name
from dramatiq.encoder import Encoder
from dramatiq.errors import DecodeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from db.derived_jobs import DERIVED_JOBS, JOBS
from jobs.heartbeat import describe_errors

HEARTBEATS_QUEUE = "heartbeats"
STORE_ACTOR = "store_heartbeats"

#: Recomputing user-days from the raw heartbeats (reprocess, backfill), all jobs in one pass.
RECOMPUTE_QUEUE = "recompute"
RECOMPUTE_ACTOR = "recompute_days"
QUEUES = (HEARTBEATS_QUEUE, *(job.queue for job in DERIVED_JOBS), RECOMPUTE_QUEUE)


class FastJSONEncoder(Encoder):
    """Dramatiq's JSON messages, encoded and decoded with orjson (several times faster).

    The wire format is unchanged. What orjson refuses but JSON allows (lone UTF-16 surrogates in
    escapes) is decoded by the standard library instead, so one such heartbeat is rejected on its
    own rather than sinking its whole batch.
    """

    def encode(self, data):
        return orjson.dumps(data)

    def decode(self, data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            try:
                return json.loads(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                raise DecodeError("failed to decode message", data, e) from None


class PoisonMessage(Exception):
    """A message that can never succeed (malformed payload): dead-lettered at once, never retried."""


class MalformedMessage(Exception):
    """A message a worker must not run at all (wrong shape, unknown actor, bad options)."""

    def __str__(self) -> str:
        return f"malformed message: {self.args[0]}"


#: Dramatiq's message fields and their JSON types.
_FIELDS = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}
#: A delayed message further ahead than this is not ours (our delays are retries and debounces).
MAX_DELAY_MS = 7 * 86_400_000


def _shown(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."


def admit(
    fields: Any, *, queue: str, actors: Mapping[str, dramatiq.Actor], redis_id: str
) -> dramatiq.Message:
    """The message a worker may run, rebuilt from the decoded fields of one fetched from `queue`
    under `redis_id`; raises MalformedMessage with the reason.

    Options are the worker's to decide: of what a producer wrote, only ``batch_id`` (log
    correlation, cut to 64 printable characters), ``retries`` (set by Dramatiq when it schedules a
    retry) and, on a delay queue, ``eta`` are kept, the last two checked; ``redis_message_id`` is
    the id Redis holds the message under.
    Everything else (``throws``, ``max_retries``, ``time_limit``, callbacks, pipelines, ...) is
    dropped, so no producer can change how a worker runs, retries or follows up a message.
    """
    if not isinstance(fields, dict):
        raise MalformedMessage(f"a JSON {type(fields).__name__}, not an object")
    if set(fields) != set(_FIELDS):
        missing, unknown = sorted(set(_FIELDS) - set(fields)), sorted(set(fields) - set(_FIELDS))
        raise MalformedMessage(
            f"not Dramatiq's fields (missing: {_shown(missing)}, unknown: {_shown(unknown)})"
        )
    for name, kind in _FIELDS.items():
        if not isinstance(fields[name], kind) or isinstance(fields[name], bool):
            got = type(fields[name]).__name__
            raise MalformedMessage(f"{name} must be a JSON {kind.__name__}, not {got}")
    if fields["queue_name"] != queue:
        raise MalformedMessage(f"queue_name {_shown(fields['queue_name'])} arrived on queue {queue!r}")
    actor = actors.get(fields["actor_name"])
    if actor is None or actor.queue_name != q_name(queue):
        raise MalformedMessage(f"no actor named {_shown(fields['actor_name'])} on queue {q_name(queue)!r}")
    if not 0 < len(fields["message_id"]) <= 128 or not fields["message_id"].isprintable():
        raise MalformedMessage("message_id must be 1 to 128 printable characters")
    wire = fields["options"]
    options: dict[str, Any] = {"redis_message_id": redis_id}
    if isinstance(wire.get("batch_id"), str) and wire["batch_id"]:  # only ever logged: cut, never refused
        options["batch_id"] = "".join(c if c.isprintable() else "?" for c in wire["batch_id"][:64])
    if "retries" in wire:
        retries = wire["retries"]
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries < 2**31:
            raise MalformedMessage("options.retries must be a non-negative integer")
        options["retries"] = retries
    if queue.endswith(".DQ") and wire.get("eta") is not None:
        eta = wire["eta"]
        if not isinstance(eta, int | float) or isinstance(eta, bool) or not math.isfinite(eta):
            raise MalformedMessage("options.eta must be a number (UNIX milliseconds)")
        if eta > time.time() * 1000 + MAX_DELAY_MS:
            raise MalformedMessage("options.eta is more than 7 days ahead")
        options["eta"] = int(eta)
    return dramatiq.Message(**{**fields, "options": options})


class StorePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Heartbeat objects; each is validated on its own, so one bad item does not sink the rest.
    heartbeats: Annotated[list[Any], Field(min_length=1, strict=True)]


UserId = Annotated[str, Field(strict=True, min_length=1, max_length=255)]


class UpdatePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Only these users' deltas (a retry narrowing down a failure); none: whoever's are waiting.
    users: Annotated[list[UserId], Field(min_length=1)] | None = None


class RecomputePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: Annotated[list[tuple[UserId, dt.date]], Field(min_length=1)]
    #: Only these keys, without the user's other stale days riding along: a split of a message
    #: that failed, narrowing down which user-day fails (worker.runtime.actors).
    alone: Annotated[bool, Field(strict=True)] = False


def parse_payload(model: type[BaseModel], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Bind an actor's message arguments to its payload model, or raise PoisonMessage."""
    fields = list(model.model_fields)
    if len(args) > len(fields):
        raise PoisonMessage(f"expected at most {len(fields)} argument(s), got {len(args)}")
    data = {**dict(zip(fields, args, strict=False)), **kwargs}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise PoisonMessage(describe_errors(e)) from None


def _options(batch_id: str | None) -> dict[str, Any]:
    return {"batch_id": batch_id} if batch_id else {}


def store_message(heartbeats: list[dict[str, Any]], batch_id: str | None = None) -> dramatiq.Message:
    return dramatiq.Message(
        queue_name=HEARTBEATS_QUEUE,
        actor_name=STORE_ACTOR,
        args=(heartbeats,),
        kwargs={},
        options=_options(batch_id),
    )


def update_message(
    job: str, users: Sequence[str] | None = None, batch_id: str | None = None
) -> dramatiq.Message:
    queue, actor = JOBS[job].queue, JOBS[job].actor
    kwargs = {"users": list(users)} if users else {}
    return dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options=_options(batch_id)
    )


def recompute_message(
    keys: Sequence[tuple[str, dt.date]], batch_id: str | None = None, *, alone: bool = False
) -> dramatiq.Message:
    args = ([[user_id, day.isoformat()] for user_id, day in keys],)
    kwargs = {"alone": True} if alone else {}
    return dramatiq.Message(
        queue_name=RECOMPUTE_QUEUE,
        actor_name=RECOMPUTE_ACTOR,
        args=args,
        kwargs=kwargs,
        options=_options(batch_id),
    )
