"""The live benchmark's pure parts: when each user sends, how sends group into producer calls, and
how derived lag is read off polled counts. No clock and no I/O here, so tests can check them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: A user's sends are `period` apart, each moved by up to +/- JITTER x period (editors do not tick).
JITTER = 0.2


@dataclass(frozen=True)
class Call:
    """One `enqueue_heartbeats` call: sent at `at` (seconds from the start) with the heartbeats
    `due` as (due time, user index), in due order."""

    at: float
    due: tuple[tuple[float, int], ...]


def due_times(users: int, period: float, duration: float, rng: random.Random) -> list[tuple[float, int]]:
    """(due time, user) of every heartbeat in [0, duration), in time order: user u sends at a
    random phase in [0, period), then every `period` seconds, each send jittered by JITTER (the
    send before the phase too: jitter brings some into the window, as it takes some out at its end)."""
    due = []
    for user in range(users):
        phase = rng.uniform(0, period)
        for k in range(-1, math.ceil(duration / period) + 1):
            at = phase + k * period + rng.uniform(-JITTER, JITTER) * period
            if 0 <= at < duration:
                due.append((at, user))
    due.sort()
    return due


def plan_calls(
    due: Sequence[tuple[float, int]], rng: random.Random, max_call: int = 25, max_wait: float = 1.0
) -> list[Call]:
    """Group due heartbeats into producer calls as an ingest service makes them: each call draws a
    size in 1..max_call and takes the next heartbeats that come due, sent when the last one is due,
    or when the first has waited `max_wait` seconds (a buffer flushed by count or by age)."""
    calls, i = [], 0
    while i < len(due):
        size, first = rng.randint(1, max_call), due[i][0]
        j = i + 1
        while j < len(due) and j - i < size and due[j][0] <= first + max_wait:
            j += 1
        at = due[j - 1][0] if j - i == size else first + max_wait
        calls.append(Call(at=at, due=tuple(due[i:j])))
        i = j
    return calls


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100); infinities count (never reflected)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def match_lags(
    sends: Mapping[str, Sequence[float]],
    base: Mapping[str, int],
    polls: Sequence[tuple[float, float, Mapping[str, int]]],
) -> list[float]:
    """Derived lag of every probe heartbeat.

    `sends[user]` holds the times the calls carrying that user's heartbeats returned, in order;
    `base[user]` is the user's count before the first; `polls` are (issued, returned, count per
    user) in order. The k-th heartbeat (1-based) is reflected by the first poll issued after its
    call returned that counts at least base + k: its lag is that poll's return minus the send
    (an upper bound, within one poll interval). Never reflected: infinity.
    """
    lags = []
    for user, times in sends.items():
        k = 0
        for issued, returned, counts in polls:
            while k < len(times) and times[k] <= issued and counts.get(user, 0) >= base[user] + k + 1:
                lags.append(returned - times[k])
                k += 1
        lags.extend([math.inf] * (len(times) - k))
    return lags
