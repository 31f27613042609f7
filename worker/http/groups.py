"""Group commit of `hbw serve`: the heartbeats of concurrent requests go to Redis as one message.

Why: under live traffic every editor plugin posts 1-25 heartbeats every ~30 s, so one store message
per request makes the per-message costs (the enqueue's round trip here; the fetch, the ack and a
share of a transaction in the worker) most of the work. Instead, the accepted heartbeats of the
requests arriving within HBW_HTTP_GROUP_WINDOW_MS of a group's first one (or until the group holds
HBW_BATCH_SIZE heartbeats) are enqueued together as one store message, the message any producer
sends (worker.runtime.messages); the group's rate-limit budgets are counted in one round trip before that
(worker.http.ratelimit), so a request costs no Redis round trip of its own.

Each request is answered only after the message carrying its heartbeats is in Redis. When the
budgets cannot be counted or the enqueue fails, every request of the group gets 503: none is told
201 for heartbeats that are not queued. A request never shares a message with another when that
would pass the batch size; one larger than the batch size is a group alone, split into messages as
the producer splits it (a failure part way is deduplicated when the client resends).

One thread does the Redis work, a group at a time, so the event loop never waits on a socket, and
while it works the next group gathers: under load groups grow on their own, up to the batch size.
A window of 0 turns grouping off: each request is its own group, committed at once on Starlette's
thread pool (several at a time), as before groups existed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dramatiq
from starlette.concurrency import run_in_threadpool

from db.errors import describe_error
from worker.http.metrics import GROUP_HEARTBEATS, GROUP_REQUESTS
from worker.http.ratelimit import Budgets, RateLimited
from worker.logs import get_logger
from worker.runtime.messages import store_message

log = get_logger("hbw.http")


class Unavailable(Exception):
    """Redis could not count the group's budgets or take its heartbeats: answered 503."""


@dataclass(eq=False, slots=True)
class Pending:
    """One request's part of a group: who it is from, and its accepted heartbeats."""

    key_hash: bytes
    address: str
    heartbeats: list[dict[str, Any]]
    #: When it arrived (event-loop time), and where its outcome is delivered.
    since: float
    answer: asyncio.Future


#: A request's outcome: the batch id of the message carrying its heartbeats (None when it had none),
#: or the exception it is refused with.
Outcome = str | None | RateLimited | Unavailable


class IngestGroups:
    def __init__(
        self, broker: dramatiq.Broker, budgets: Budgets, *, batch_size: int, window_ms: float
    ) -> None:
        self.broker, self.budgets, self.batch_size = broker, budgets, batch_size
        self.window = window_ms / 1000
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hbw-ingest-groups")
        self._pending: deque[Pending] = deque()
        self._pending_heartbeats = 0
        self._drainer: asyncio.Task | None = None
        self._wake: asyncio.Future | None = None

    async def submit(self, key_hash: bytes, address: str, heartbeats: list[dict[str, Any]]) -> str | None:
        """Count the request against its budgets and queue its (validated) heartbeats; returns the
        batch id of the message carrying them once it is in Redis. Raises RateLimited or Unavailable."""
        loop = asyncio.get_running_loop()
        entry = Pending(key_hash, address, heartbeats, loop.time(), loop.create_future())
        if not self.window:
            [outcome] = await run_in_threadpool(self.commit, [entry])
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        self._pending.append(entry)
        self._pending_heartbeats += len(heartbeats)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        elif self._pending_heartbeats >= self.batch_size:
            self._wake_up()
        return await entry.answer

    def commit(self, group: list[Pending]) -> list[Outcome]:
        """Count the group's budgets, then enqueue the heartbeats of the requests within them (in
        this thread, never the event loop's): one outcome per request."""
        try:
            verdicts = self.budgets.check_many([(entry.key_hash, entry.address) for entry in group])
            heartbeats = [
                hb
                for entry, verdict in zip(group, verdicts, strict=True)
                if verdict is None
                for hb in entry.heartbeats
            ]
            batch_id = uuid.uuid4().hex[:16] if heartbeats else None
            for start in range(0, len(heartbeats), self.batch_size):
                self.broker.enqueue(store_message(heartbeats[start : start + self.batch_size], batch_id))
        except Exception as e:
            log.warning("http.unavailable", error=describe_error(e), requests=len(group))
            return [Unavailable(describe_error(e)) for _ in group]
        if heartbeats:
            GROUP_REQUESTS.observe(len(group))
            GROUP_HEARTBEATS.observe(len(heartbeats))
        return [verdict or batch_id for verdict in verdicts]

    async def _drain(self) -> None:
        """Commit the pending requests a group at a time until none is left: a group closes when
        its first request has waited the window, or at once when the batch size is reached."""
        loop = asyncio.get_running_loop()
        group: list[Pending] = []
        try:
            while self._pending:
                wait = self._pending[0].since + self.window - loop.time()
                if wait > 0 and self._pending_heartbeats < self.batch_size:
                    self._wake = loop.create_future()
                    timer = loop.call_later(wait, self._wake_up)
                    try:
                        await self._wake
                    finally:
                        timer.cancel()
                    continue
                group = self._take()
                try:
                    outcomes = await loop.run_in_executor(self._thread, self.commit, group)
                except RuntimeError as e:  # the thread is gone (interpreter shutdown)
                    outcomes = [Unavailable(describe_error(e)) for _ in group]
                for entry, outcome in zip(group, outcomes, strict=True):
                    if entry.answer.done():  # the request was cancelled meanwhile
                        continue
                    if isinstance(outcome, Exception):
                        entry.answer.set_exception(outcome)
                    else:
                        entry.answer.set_result(outcome)
                group = []
        finally:
            self._drainer = None
            for entry in (*group, *self._pending):  # only when cancelled: the loop is closing
                entry.answer.cancel()
            self._pending.clear()
            self._pending_heartbeats = 0

    def _take(self) -> list[Pending]:
        """The oldest pending requests, as many as fit in the batch size (at least one)."""
        group = [self._pending.popleft()]
        size = len(group[0].heartbeats)
        while self._pending and size + len(self._pending[0].heartbeats) <= self.batch_size:
            group.append(self._pending.popleft())
            size += len(group[-1].heartbeats)
        self._pending_heartbeats -= size
        return group

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
