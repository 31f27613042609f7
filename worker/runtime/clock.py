"""Milliseconds on Redis's clock, as this process knows it, for the due times of delayed messages.

Dramatiq stamps a delayed message (a retry's backoff, a derived job's debounced wake) with a due
time from the sending host's clock and holds it until the fetching host's clock passes it, so a
host whose clock is a minute behind held the other hosts' wakes a minute longer (and every other
wake of that job waited behind it: worker.runtime.outbox). Here both ends read Redis's clock
instead: this process's offset from it is measured before its first delayed message, at each of a
worker's beats (worker.runtime.broker.HbwRedisBroker.beat) and when a measure is a minute old, and
Dramatiq's `current_millis` in its Redis broker and worker is this module's `now_ms`.
"""

from __future__ import annotations

import time

import dramatiq.brokers.redis
import dramatiq.worker
import redis

#: Redis's clock minus this host's, in ms, and when it was last measured (monotonic seconds).
_offset_ms = 0
_measured_at: float | None = None

#: A producer's measure is taken again when older than this.
STALE_AFTER_S = 60


def now_ms() -> int:
    return int(time.time() * 1000) + _offset_ms


def measure(client: redis.Redis) -> int:
    """Measure the offset (the middle of the round trip stands for Redis's reading); returns it."""
    global _offset_ms, _measured_at
    before = time.time()
    seconds, micros = client.time()
    after = time.time()
    _offset_ms = round(seconds * 1000 + micros / 1000 - (before + after) * 500)
    _measured_at = time.monotonic()
    return _offset_ms


def measure_if_stale(client: redis.Redis) -> None:
    if _measured_at is None or time.monotonic() - _measured_at > STALE_AFTER_S:
        measure(client)


def install() -> None:
    """Dramatiq's due times on Redis's clock, in this process (idempotent)."""
    dramatiq.brokers.redis.current_millis = now_ms
    dramatiq.worker.current_millis = now_ms
