"""The live benchmark's producer side: its users' heartbeats, the preloaded day, the paced sends.

Every heartbeat is distinct (a user's times are at least milliseconds apart) and has a project, a
language and a user agent, so each of the three totals tables counts every one of them: the
derived state can be checked against what was sent without knowing how the engine works.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from bench.pacing import Call, percentile
from worker.cli.sample import LANGUAGES, USER_AGENTS
from worker.producer import enqueue_heartbeats
from worker.runtime.messages import HEARTBEATS_QUEUE
from worker.runtime.redis_keys import Keys

PROJECTS = ["web-app", "api", "infra", "docs", "data-pipeline", "mobile", "cli-tools"]
#: Queued store messages the preload lets pile up before it waits for the workers (bounds Redis).
PRELOAD_QUEUED = 40


class Users:
    """N users, each with a main project and one more, one editor: a workday's variety."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.count = n
        self.ids = [f"live-{i:05d}" for i in range(n)]
        self.projects = [rng.sample(PROJECTS, 2) for _ in range(n)]
        self.agents = [rng.choice(USER_AGENTS) for _ in range(n)]
        self.rng = random.Random(seed + 1)

    def item(self, user: int, at: float) -> dict[str, Any]:
        rng = self.rng
        project = self.projects[user][rng.random() < 0.2]
        ext, language = list(LANGUAGES.items())[PROJECTS.index(project) % len(LANGUAGES)]
        return {
            "user_id": self.ids[user],
            "entity": f"/home/{self.ids[user]}/{project}/src/module_{rng.randrange(30)}{ext}",
            "type": "file",
            "category": "coding",
            "time": round(at, 6),
            "project": project,
            "language": language,
            "branch": "main",
            "is_write": rng.random() < 0.1,
            "lineno": rng.randrange(1, 800),
            "user_agent": self.agents[user],
        }

    def day(self, user: int, d: int, end: float, spacing: float) -> Iterator[dict[str, Any]]:
        """d heartbeats `spacing` apart, the last within `spacing` before `end`."""
        last = end - self.rng.uniform(0.001, spacing)
        return (self.item(user, last - (d - 1 - i) * spacing) for i in range(d))


def preload(
    users: Users,
    d: int,
    end: float,
    spacing: float,
    broker: dramatiq.Broker,
    batch_size: int,
    advance: Callable[[int], None],
) -> None:
    """Every user's day through the producer API in full messages, a few users per message, at
    the pace the workers take them (a bounded queue); the caller waits for the drain."""
    queued = Keys(broker.namespace).messages(HEARTBEATS_QUEUE)
    per_call = max(1, 20_000 // d)
    for first in range(0, len(users.ids), per_call):
        chunk = range(first, min(first + per_call, len(users.ids)))
        items = itertools.chain.from_iterable(users.day(user, d, end, spacing) for user in chunk)
        result = enqueue_heartbeats(items, batch_size=batch_size, broker=broker)
        if result.rejected:
            raise RuntimeError(f"preload heartbeat rejected: {result.rejected[0].reason}")
        advance(result.enqueued)
        while broker.client.hlen(queued) > PRELOAD_QUEUED:
            time.sleep(0.05)


@dataclass
class Produced:
    sent: int = 0
    rejected: int = 0
    calls: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this thread's, in enqueue_heartbeats only
    late: list[float] = field(default_factory=list)  # seconds each call went out after its time
    sends: dict[str, list[float]] = field(default_factory=dict)  # probe -> monotonic send returns

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "rejected": self.rejected,
            "calls": self.calls,
            "seconds": self.seconds,
            "per_s": self.sent / self.seconds if self.seconds else 0.0,
            "late_p50_ms": 1000 * (percentile(self.late, 50) or 0.0),
            "late_p99_ms": 1000 * (percentile(self.late, 99) or 0.0),
        }


def produce(
    calls: list[Call],
    users: Users,
    probes: int,
    broker: dramatiq.Broker,
    batch_size: int,
    advance: Callable[[int], None],
) -> Produced:
    """Send each planned call at its time (heartbeat times: when each was due, on the wall clock);
    record when the calls carrying the first `probes` users' heartbeats returned."""
    out = Produced(sends={users.ids[user]: [] for user in range(probes)})
    start, wall = time.monotonic(), time.time()
    for call in calls:
        delay = start + call.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.late.append(max(0.0, -delay))
        items = [users.item(user, wall + at) for at, user in call.due]
        cpu = time.thread_time()
        result = enqueue_heartbeats(items, batch_size=batch_size, broker=broker)
        out.cpu_seconds += time.thread_time() - cpu
        returned = time.monotonic()
        for _, user in call.due:
            if user < probes:
                out.sends[users.ids[user]].append(returned)
        out.sent += result.enqueued
        out.rejected += len(result.rejected)
        out.calls += 1
        advance(len(items))
    out.seconds = time.monotonic() - start
    return out
