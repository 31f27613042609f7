"""The benchmark's data set: N realistic heartbeats, half of them from one heavy user.

Built from worker.cli.sample (sessions, project switches, several editors, equal timestamps, 5%
exact duplicates): one heavy user with two years of history (half of N, for the read benchmark)
and many ordinary users with two weeks each. Items arrive roughly in time order, as plugins send
them live, with a minute of jitter (so batches are out of order locally, like real ingest).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from worker.cli.sample import generate_heartbeats

HEAVY_USER = "heavy-user"
#: The data ends (exclusive) on this UTC day, so every run generates the same heartbeats.
END = dt.date(2026, 1, 1)
HEAVY_PROJECTS = [f"product-{i:02d}" for i in range(24)]


def generate(n: int, *, seed: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    heavy_n = n // 2
    heavy = generate_heartbeats(
        seed=seed,
        users=[HEAVY_USER],
        days=730,
        end=END,
        projects=HEAVY_PROJECTS,
        sessions_per_day=(3, 6),
        heartbeats_per_session=(100, 250),
    )
    # ~1,500 heartbeats per ordinary user over two weeks
    ordinary_users = max(1, (n - heavy_n) // 1_500 + 1)
    others = generate_heartbeats(seed=seed + 1, users=ordinary_users, days=14, end=END)
    items = _take(rng, heavy, heavy_n) + _take(rng, others, n - heavy_n)
    items.sort(key=lambda item: item["time"] + rng.uniform(0, 60))
    return items


def _take(rng: random.Random, items: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    if len(items) < k:
        raise ValueError(f"generator made {len(items):,} heartbeats, {k:,} needed; widen its ranges")
    return rng.sample(items, k)


def distinct_count(items: list[dict[str, Any]]) -> int:
    """Distinct heartbeats by SPEC section 2's identity (the sample's names need no stripping
    to compare, and its times are whole microseconds)."""
    fields = ("user_id", "entity", "type", "category", "time", "project", "branch", "language", "is_write")
    seen = set()
    for item in items:
        key = tuple(item.get(name) for name in fields)
        seen.add(_normalise(key))
    return len(seen)


def _normalise(key: tuple) -> tuple:
    user_id, entity, type_, category, time, project, branch, language, is_write = key
    return (
        user_id,
        entity,
        type_ or "file",
        (category or "coding").lower(),
        time,
        (project or "").strip() or None,
        branch or None,
        language or None,
        bool(is_write),
    )
