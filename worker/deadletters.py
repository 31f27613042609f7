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
from dramatiq.errors import DecodeError

from worker.logs import get_logger

log = get_logger("hbw.deadletters")


def _keys(broker, queue: str) -> tuple[str, str, str]:
    base = f"{broker.namespace}:{q_name(queue)}.XQ"
    return base, f"{base}.msgs", f"{base}.errors"


def record_error(broker, queue: str, redis_message_id: str, **info: Any) -> None:
    """Remember why a message was dead-lettered."""
    _, _, errors = _keys(broker, queue)
    broker.client.hset(errors, redis_message_id, json.dumps({"at": int(time.time() * 1000), **info}))


def _held(broker, queue: str, worker_id: str) -> tuple[list[bytes], list[bytes | None]]:
    """The ids a worker holds fetched but unacked on a queue, and their stored messages."""
    held = list(broker.client.smembers(f"{broker.namespace}:__acks__.{worker_id}.{queue}"))
    return held, (broker.client.hmget(f"{broker.namespace}:{queue}.msgs", held) if held else [])


def find_held_ids(broker, queue: str, datas: set[bytes]) -> list[str]:
    """The ids under which this worker holds (fetched, unacked) these exact messages."""
    held, stored_messages = _held(broker, queue, broker.broker_id)
    return [rid.decode() for rid, stored in zip(held, stored_messages, strict=True) if stored in datas]


def find_held_message(broker, queue: str, message_id: str) -> str | None:
    """The id under which this worker holds (fetched, unacked) the message with this message_id."""
    held, stored_messages = _held(broker, queue, broker.broker_id)
    for redis_id, stored in zip(held, stored_messages, strict=True):
        try:
            if stored and json.loads(stored).get("message_id") == message_id:
                return redis_id.decode()
        except (ValueError, AttributeError):
            continue
    return None


def dead_letter_raw(broker, queue: str, worker_id: str, data: bytes, error: str) -> bool:
    """Move a message this worker fetched but cannot even decode to the dead-letter queue.

    Its id is not in the (unreadable) message, so it is found among the ids this worker holds
    unacked on that queue, by its data. Returns False if it is not there (already moved).
    """
    client, ns = broker.client, broker.namespace
    acks, messages = f"{ns}:__acks__.{worker_id}.{queue}", f"{ns}:{queue}.msgs"
    raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "replace")
    held, stored_messages = _held(broker, queue, worker_id)
    for redis_id, stored in zip(held, stored_messages, strict=True):
        if stored == raw:
            xq, xq_messages, errors = _keys(broker, queue)
            rid = redis_id.decode() if isinstance(redis_id, bytes) else redis_id
            pipe = client.pipeline(transaction=True)
            pipe.zadd(xq, {rid: int(time.time() * 1000)})
            pipe.hset(xq_messages, rid, raw)
            pipe.hdel(messages, rid)
            pipe.srem(acks, rid)
            pipe.hset(errors, rid, json.dumps({"at": int(time.time() * 1000), "error": error}))
            pipe.execute()
            log.error("message.dead_lettered", queue=q_name(queue), redis_message_id=rid, error=error)
            return True
    return False


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
            try:  # what a worker can run, by Dramatiq's own standard
                message = dramatiq.Message.decode(raw).asdict()
            except DecodeError:
                message = None
            details = json.loads(info) if info else {}
            letters.append(
                DeadLetter(
                    queue=queue,
                    redis_message_id=rid,
                    died_at=score / 1000,
                    actor=(message or {}).get("actor_name") or details.get("actor"),
                    message_id=(message or {}).get("message_id") or details.get("message_id"),
                    retries=int(((message or {}).get("options") or {}).get("retries", 0) or 0),
                    error=details.get("error"),
                    message=message,
                    raw=raw,
                )
            )
    letters.sort(key=lambda letter: letter.died_at)
    return letters[:limit] if limit else letters


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
