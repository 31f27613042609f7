"""The message contract: queues, actor names and payloads (documented in the README).

Producers build messages from here without importing actor code, and actors validate what they
receive against the same models, because a producer may be written in another language.
Arguments are plain JSON: a list of heartbeat objects, or a list of ``[user_id, "YYYY-MM-DD"]``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Annotated, Any

import dramatiq
import orjson
from dramatiq.encoder import Encoder
from dramatiq.errors import DecodeError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.heartbeat import describe_errors

HEARTBEATS_QUEUE = "heartbeats"
STORE_ACTOR = "store_heartbeats"

#: Derived job -> (queue, actor). One queue per job so operators can scale them separately.
RECOMPUTE = {
    "projects": ("projects", "recompute_projects"),
    "languages": ("languages", "recompute_languages"),
    "user_agents": ("user_agents", "recompute_user_agents"),
}
QUEUES = (HEARTBEATS_QUEUE, *(queue for queue, _ in RECOMPUTE.values()))


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
            except (ValueError, UnicodeDecodeError) as e:
                raise DecodeError("failed to decode message", data, e) from None


class PoisonMessage(Exception):
    """A message that can never succeed (malformed payload): dead-lettered at once, never retried."""


class StorePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Heartbeat objects; each is validated on its own, so one bad item does not sink the rest.
    heartbeats: Annotated[list[Any], Field(min_length=1, strict=True)]


UserId = Annotated[str, Field(strict=True, min_length=1, max_length=255)]


class RecomputePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: Annotated[list[tuple[UserId, dt.date]], Field(min_length=1)]


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
        queue_name=HEARTBEATS_QUEUE, actor_name=STORE_ACTOR, args=(heartbeats,), kwargs={},
        options=_options(batch_id),
    )  # fmt: skip


def recompute_message(
    job: str, keys: Sequence[tuple[str, dt.date]], batch_id: str | None = None
) -> dramatiq.Message:
    queue, actor = RECOMPUTE[job]
    args = ([[user_id, day.isoformat()] for user_id, day in keys],)
    return dramatiq.Message(
        queue_name=queue, actor_name=actor, args=args, kwargs={}, options=_options(batch_id)
    )
