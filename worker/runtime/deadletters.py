"""The dead-letter queues: what failed for good, why, and putting it back.

Dramatiq's Redis broker keeps a queue's dead letters in ``<ns>:<queue>.XQ`` (a sorted set of ids by
the time they died) and ``<ns>:<queue>.XQ.msgs`` (id -> message), and drops them after
``HBW_DEAD_LETTER_TTL_DAYS``. Dramatiq does not keep the reason, so we do, beside them, in
``<ns>:<queue>.XQ.errors`` (id -> JSON with the error, actor and message id); entries whose dead
letter has expired are dropped whenever the dead letters are listed or purged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.common import q_name

from worker.logs import get_logger
from worker.runtime.messages import admit
from worker.runtime.redis_keys import Keys

log = get_logger("hbw.deadletters")


def _keys(broker, queue: str) -> tuple[str, str, str]:
    base = Keys(broker.namespace).dead_letters(queue)
    return base, f"{base}.msgs", f"{base}.errors"


def record_error(broker, queue: str, redis_message_id: str, **info: Any) -> None:
    """Remember why a message was dead-lettered."""
    _, _, errors = _keys(broker, queue)
    broker.client.hset(errors, redis_message_id, json.dumps({"at": int(time.time() * 1000), **info}))


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_message_id: str
    died_at: float  # UNIX seconds
    actor: str | None
    message_id: str | None
    retries: int
    error: str | None
    message: dict[str, Any] | None  # None when it cannot be decoded
    raw: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "id": self.redis_message_id,
            "died_at": self.died_at,
            "actor": self.actor,
            "message_id": self.message_id,
            "retries": self.retries,
            "error": self.error,
            "args": (self.message or {}).get("args"),
        }


def list_dead_letters(broker, queues: Iterable[str], limit: int | None = None) -> list[DeadLetter]:
    client = broker.client
    letters: list[DeadLetter] = []
    for queue in queues:
        xq, xq_messages, errors = _keys(broker, queue)
        entries = client.zrange(xq, 0, -1, withscores=True)
        ids = [rid.decode() for rid, _ in entries]
        raws = client.hmget(xq_messages, ids) if ids else []
        infos = client.hmget(errors, ids) if ids else []
        _drop_stale_errors(broker, queue, set(ids))
        for (_, score), rid, raw, info in zip(entries, ids, raws, infos, strict=True):
            if raw is None:
                continue
            message = _runnable(broker, queue, rid, raw)
            details = json.loads(info) if info else {}
            letters.append(
                DeadLetter(
                    queue=queue,
                    redis_message_id=rid,
                    died_at=score / 1000,
                    actor=(message or {}).get("actor_name") or details.get("actor"),
                    message_id=(message or {}).get("message_id") or details.get("message_id"),
                    retries=(message or {}).get("options", {}).get("retries", 0),
                    error=details.get("error"),
                    message=message,
                    raw=raw,
                )
            )
    letters.sort(key=lambda letter: letter.died_at)
    return letters[:limit] if limit else letters


def _runnable(broker, queue: str, redis_id: str, raw: bytes) -> dict[str, Any] | None:
    """The dead letter as the message a worker would run (worker.runtime.messages.admit), or None when no
    worker would run it: then it can only be purged. A letter from a delay queue names that queue."""
    try:
        fields = dramatiq.get_encoder().decode(raw)
        named = fields.get("queue_name") if isinstance(fields, dict) else None
        on = named if isinstance(named, str) and q_name(named) == queue else queue
        return admit(fields, queue=on, actors=broker.actors, redis_id=redis_id).asdict()
    except Exception:
        return None


def _drop_stale_errors(broker, queue: str, alive: set[str]) -> None:
    _, _, errors = _keys(broker, queue)
    stale = [rid for rid in broker.client.hkeys(errors) if rid.decode() not in alive]
    if stale:
        broker.client.hdel(errors, *stale)


def _remove(broker, letter: DeadLetter) -> None:
    xq, xq_messages, errors = _keys(broker, letter.queue)
    pipe = broker.client.pipeline(transaction=True)
    pipe.zrem(xq, letter.redis_message_id)
    pipe.hdel(xq_messages, letter.redis_message_id)
    pipe.hdel(errors, letter.redis_message_id)
    pipe.execute()


def retry(broker, letters: Sequence[DeadLetter]) -> tuple[int, list[DeadLetter]]:
    """Put dead letters back on their queue with a fresh retry budget; returns (retried, skipped).

    Enqueue first, remove after: a crash in between retries a message twice, which the actors
    absorb (they are idempotent). Undecodable letters cannot be retried, only purged.
    """
    retried, skipped = 0, []
    for letter in letters:
        if letter.message is None:
            skipped.append(letter)
            continue
        fields = dict(letter.message)
        options = {
            k: v for k, v in (fields.get("options") or {}).items() if k not in ("retries", "traceback")
        }
        message = dramatiq.Message(
            queue_name=q_name(fields.get("queue_name") or letter.queue),
            actor_name=fields["actor_name"],
            args=tuple(fields.get("args") or ()),
            kwargs=fields.get("kwargs") or {},
            options={k: v for k, v in options.items() if k not in ("redis_message_id", "eta")},
            message_id=fields.get("message_id") or letter.redis_message_id,
        )
        broker.enqueue(message)
        _remove(broker, letter)
        retried += 1
        log.info("message.retried_from_dead_letters", queue=letter.queue, message_id=message.message_id)
    return retried, skipped


def purge(broker, letters: Sequence[DeadLetter]) -> int:
    for letter in letters:
        _remove(broker, letter)
    return len(letters)
