"""Heartbeat streams for end-to-end tests: the realistic sample of ``worker.cli.sample`` (with the
user agents of the corpus in tests/data), plus invalid items for each rule of SPEC section 1, shuffled
into out-of-order delivery. Deterministic per seed."""

from __future__ import annotations

import copy
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.cli.sample import generate_heartbeats

#: Real user agents of WakaTime plugins (from the project's source document, kept here).
CORPUS = Path(__file__).resolve().parent / "data" / "user_agents.txt"


def user_agents() -> list[str]:
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


#: One invalid item per rule of SPEC section 1 (plus the input-level ones the CLI sees).
def invalid_items(rng: random.Random, valid: dict[str, Any], now: float) -> list[dict[str, Any] | Any]:
    def with_(**changes):
        item = copy.deepcopy(valid)
        for key, value in changes.items():
            if value is _DROP:
                item.pop(key, None)
            else:
                item[key] = value
        return item

    return [
        with_(user_id=_DROP),
        with_(user_id=""),
        with_(user_id="u" * 256),
        with_(user_id=42),
        with_(entity=_DROP),
        with_(entity=""),
        with_(entity="x" * 4097),  # a huge entity
        with_(type="folder"),
        with_(category="sleeping"),
        with_(time=_DROP),
        with_(time=str(valid["time"])),
        with_(time=True),
        with_(time=float("nan")),
        with_(time=946684799.0),  # 1999-12-31T23:59:59Z
        with_(time=now + 7200),
        with_(project="p" * 256),
        with_(branch="b" * 256),
        with_(language="l" * 65),
        with_(is_write="yes"),
        with_(lineno=-1),
        with_(lines=2**31),
        with_(cursorpos=1.5),
        with_(dependencies=[1, 2]),
        with_(user_agent="a" * 1025),
        with_(machine="m" * 256),
        with_(entity="src/\x00evil.py"),  # a NUL character
        with_(project="nul\x00project"),
        ["not", "an", "object"],
        "just a string",
    ]


_DROP = object()


@dataclass
class Stream:
    valid: list[dict[str, Any]]  # every valid item delivered, duplicates included
    invalid: list[Any]
    items: list[Any]  # valid + invalid, shuffled: what gets delivered
    first_day: dt.date
    last_day: dt.date


def generate(
    *, seed: int = 1, users: int = 8, days: int = 5, invalid_share: float = 0.02, **options
) -> Stream:
    """A sample stream (worker.cli.sample) plus a share of invalid items, all shuffled."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    end = now.date()  # the last generated day is yesterday; sessions may run into today
    valid = generate_heartbeats(
        seed=seed, users=users, days=days, end=end, user_agents=user_agents(), **options
    )
    templates = invalid_items(rng, valid[0], now.timestamp())
    count = max(len(templates), int(len(valid) * invalid_share))
    invalid = [copy.deepcopy(templates[i % len(templates)]) for i in range(count)]
    items = [*valid, *invalid]
    rng.shuffle(items)  # out-of-order delivery
    return Stream(
        valid=valid, invalid=invalid, items=items, first_day=end - dt.timedelta(days=days), last_day=end
    )


def random_batches(rng: random.Random, items: list[Any], *, low: int = 1, high: int = 700) -> list[list[Any]]:
    batches, start = [], 0
    while start < len(items):
        size = rng.randint(low, high)
        batches.append(items[start : start + size])
        start += size
    return batches
