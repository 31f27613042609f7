"""Realistic heartbeat streams for end-to-end tests and the benchmark.

Users work in sessions: a burst of heartbeats every few seconds to a few minutes, mostly on one
project, sometimes switching project or editor, with pauses longer than the timeout, sessions
that run past midnight UTC, heartbeats without project or language, equal timestamps, exact
duplicates and a share of invalid items (each rule of SPEC section 1). Deterministic per seed.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "user_agents.txt"
LANGUAGES = {
    ".py": "Python",
    ".ts": "TypeScript",
    ".go": "Go",
    ".rs": "Rust",
    ".md": "Markdown",
    ".sql": "SQL",
}
CATEGORIES = ["coding", "coding", "coding", "Debugging", "writing tests", "code reviewing", "AI Coding"]
FALLBACK_AGENTS = [
    "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0",
    "wakatime/13.1.0 (Linux-5.15.0-91-generic-x86_64-with-glibc2.35) Python3.11.7.final.0 emacs/29.1 "
    "emacs-wakatime/1.0.2",
    "Chrome/120.0.6099.109 chrome-wakatime/3.0.17",
]


def user_agents() -> list[str]:
    if CORPUS.exists():
        lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line] or FALLBACK_AGENTS
    return FALLBACK_AGENTS


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
    *,
    seed: int = 1,
    users: int = 8,
    days: int = 5,
    sessions_per_day: tuple[int, int] = (1, 4),
    heartbeats_per_session: tuple[int, int] = (10, 80),
    duplicate_share: float = 0.05,
    invalid_share: float = 0.02,
    end: dt.datetime | None = None,
) -> Stream:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    end = end or now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = (end - dt.timedelta(days=days)).date()
    agents = user_agents()
    valid: list[dict[str, Any]] = []

    for u in range(users):
        user_id = f"user-{u:03d}" if u % 5 else f"ünïcode-user-{u}"
        projects = [f"project-{u}-{p}" for p in range(rng.randint(2, 5))] + [None]
        if u % 3 == 0:
            projects.append("shared-name")  # same project name for several users
        my_agents = rng.sample(agents, k=min(len(agents), rng.randint(1, 3)))
        files = [f"src/{name}{ext}" for name in ("main", "db", "api", "util", "README") for ext in LANGUAGES]
        for d in range(days):
            day_start = dt.datetime.combine(first_day + dt.timedelta(days=d), dt.time(), dt.UTC)
            for _ in range(rng.randint(*sessions_per_day)):
                # some sessions start late enough to cross midnight
                start = day_start + dt.timedelta(
                    seconds=rng.uniform(0, 86_400 - (600 if rng.random() < 0.8 else 0))
                )
                t_us = int(start.timestamp() * 1_000_000)
                project = rng.choice(projects)
                agent = rng.choice(my_agents)
                for _ in range(rng.randint(*heartbeats_per_session)):
                    if rng.random() < 0.05:
                        project = rng.choice(projects)  # project switch
                    if rng.random() < 0.03:
                        agent = rng.choice(my_agents)
                    entity = rng.choice(files)
                    ext = entity[entity.rfind(".") :]
                    item: dict[str, Any] = {
                        "user_id": user_id,
                        "entity": entity,
                        "type": "file",
                        "time": t_us / 1_000_000,
                        "project": project if project is None or rng.random() > 0.02 else f"  {project}  ",
                        "language": LANGUAGES[ext] if rng.random() > 0.1 else None,
                        "category": rng.choice(CATEGORIES) if rng.random() < 0.2 else None,
                        "is_write": rng.random() < 0.3,
                        "lineno": rng.randint(1, 500) if rng.random() < 0.8 else None,
                        "branch": rng.choice(["main", "feature/x", None]),
                        "user_agent": agent if rng.random() > 0.03 else None,
                        "machine": f"host-{u}",
                        "dependencies": "os,sys" if rng.random() < 0.1 else None,
                    }
                    if rng.random() < 0.01:
                        item["entity"] = "https://example.com/docs"
                        item["type"] = "url"
                        item["language"] = ""
                    valid.append(item)
                    # gap to the next heartbeat: mostly short, sometimes beyond the timeout
                    roll = rng.random()
                    if roll < 0.02:
                        gap_us = 0  # equal timestamps
                    elif roll < 0.07:
                        gap_us = rng.randint(901, 3_600) * 1_000_000
                    elif roll < 0.09:
                        gap_us = 900 * 1_000_000  # exactly the timeout
                    else:
                        gap_us = rng.randint(1_000_000, 300_000_000) + rng.randint(0, 999_999)
                    t_us += gap_us
                    if t_us > int((now - dt.timedelta(minutes=5)).timestamp() * 1_000_000):
                        break

    duplicates = [copy.deepcopy(rng.choice(valid)) for _ in range(int(len(valid) * duplicate_share))]
    valid.extend(duplicates)
    templates = invalid_items(rng, valid[0], now.timestamp())
    invalid = [
        copy.deepcopy(templates[i % len(templates)])
        for i in range(max(len(templates), int(len(valid) * invalid_share)))
    ]
    items = [*valid, *invalid]
    rng.shuffle(items)  # out-of-order delivery
    return Stream(valid=valid, invalid=invalid, items=items, first_day=first_day, last_day=end.date())


def random_batches(rng: random.Random, items: list[Any], *, low: int = 1, high: int = 700) -> list[list[Any]]:
    batches, start = [], 0
    while start < len(items):
        size = rng.randint(low, high)
        batches.append(items[start : start + size])
        start += size
    return batches
