"""Realistic sample heartbeats, for `hbw demo`, the benchmark and the tests.

Users work in sessions: heartbeats every few seconds to a few minutes, mostly on one project,
sometimes switching project or editor, with pauses longer than the timeout, sessions running past
midnight UTC, heartbeats without project or language, equal timestamps and exact duplicates.
Deterministic for a given seed and end date.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

LANGUAGES = {
    ".py": "Python",
    ".ts": "TypeScript",
    ".go": "Go",
    ".rs": "Rust",
    ".md": "Markdown",
    ".sql": "SQL",
}
CATEGORIES = ["coding", "coding", "coding", "Debugging", "writing tests", "code reviewing", "AI Coding"]
USER_AGENTS = [
    "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0",
    "wakatime/13.1.0 (Linux-5.15.0-91-generic-x86_64-with-glibc2.35) Python3.11.7.final.0 emacs/29.1 "
    "emacs-wakatime/1.0.2",
    "wakatime/v1.86.5 (linux-6.6.4-200.fc39.x86_64-unknown) go1.21.3 neovim/900 vim-wakatime/11.1.1",
    "wakatime/v1.123.0 (darwin-23.4.0-arm64) go1.24.4 windsurf/1.99.3 vscode-wakatime/25.1.1",
    "wakatime/v1.102.0 (Windows-11-10.0.22631-SP0) Java21.0.2 IntelliJ/2024.3.1 IntelliJ-wakatime/15.1.0",
    "wakatime/v2.14.7 (darwin-arm64) go1.26.3 ClaudeCode/2.1.197 cursor/1.105.1 vscode-wakatime/30.2.1",
    "Chrome/120.0.6099.109 chrome-wakatime/3.0.17",
]
DEMO_USERS = ["alice", "bob", "carol", "dave"]
DEMO_PROJECTS = ["web-app", "api", "infra", "docs", "data-pipeline", "mobile", "cli-tools"]


def generate_heartbeats(
    *,
    seed: int = 1,
    users: int | Sequence[str] = 8,
    days: int = 5,
    end: dt.date,
    sessions_per_day: tuple[int, int] = (1, 4),
    heartbeats_per_session: tuple[int, int] = (10, 80),
    duplicate_share: float = 0.05,
    user_agents: Sequence[str] = USER_AGENTS,
    projects: Sequence[str] | None = None,
    not_after: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Valid heartbeats for `days` UTC days up to `end` (exclusive), duplicates included.

    `users` is a count (names generated) or a list of names; heartbeats later than `not_after`
    (default: 5 minutes ago) are not generated, so every item passes validation.
    """
    rng = random.Random(seed)
    not_after_us = int((not_after or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).timestamp() * 1e6)
    first_day = end - dt.timedelta(days=days)
    names = list(users) if not isinstance(users, int) else [_user_name(u) for u in range(users)]
    items: list[dict[str, Any]] = []

    for u, user_id in enumerate(names):
        pool = list(projects) if projects else [f"project-{u}-{p}" for p in range(5)]
        mine = [*rng.sample(pool, k=min(len(pool), rng.randint(2, 5))), None]
        if u % 3 == 0:
            mine.append("shared-name")  # the same project name for several users
        agents = rng.sample(list(user_agents), k=min(len(user_agents), rng.randint(1, 3)))
        files = [f"src/{name}{ext}" for name in ("main", "db", "api", "util", "README") for ext in LANGUAGES]
        for d in range(days):
            day_start = dt.datetime.combine(first_day + dt.timedelta(days=d), dt.time(), dt.UTC)
            for _ in range(rng.randint(*sessions_per_day)):
                # most sessions start early enough to end the same day; some run past midnight
                latest = 86_400 - (3_600 if rng.random() < 0.8 else 0)
                t_us = int((day_start + dt.timedelta(seconds=rng.uniform(0, latest))).timestamp() * 1e6)
                project = rng.choice(mine)
                agent = rng.choice(agents)
                for _ in range(rng.randint(*heartbeats_per_session)):
                    if t_us > not_after_us:
                        break
                    if rng.random() < 0.05:
                        project = rng.choice(mine)  # project switch
                    if rng.random() < 0.03:
                        agent = rng.choice(agents)
                    items.append(_heartbeat(rng, user_id, u, t_us, project, agent, files))
                    t_us += _gap_us(rng)

    duplicates = [copy.deepcopy(rng.choice(items)) for _ in range(int(len(items) * duplicate_share))]
    return items + duplicates


def _user_name(index: int) -> str:
    return f"user-{index:03d}" if index % 5 else f"ünïcode-user-{index}"


def _heartbeat(rng, user_id, u, t_us, project, agent, files) -> dict[str, Any]:
    entity = rng.choice(files)
    item: dict[str, Any] = {
        "user_id": user_id,
        "entity": entity,
        "type": "file",
        "time": t_us / 1_000_000,
        "project": project if project is None or rng.random() > 0.02 else f"  {project}  ",
        "language": LANGUAGES[entity[entity.rfind(".") :]] if rng.random() > 0.1 else None,
        "category": rng.choice(CATEGORIES) if rng.random() < 0.2 else None,
        "is_write": rng.random() < 0.3,
        "lineno": rng.randint(1, 500) if rng.random() < 0.8 else None,
        "branch": rng.choice(["main", "feature/x", None]),
        "user_agent": agent if rng.random() > 0.03 else None,
        "machine": f"host-{u}",
        "dependencies": "os,sys" if rng.random() < 0.1 else None,
    }
    if rng.random() < 0.01:
        item.update(entity="https://example.com/docs", type="url", language="")
    return item


def _gap_us(rng: random.Random) -> int:
    """Mostly short gaps, sometimes beyond the timeout, sometimes exactly it, sometimes none."""
    roll = rng.random()
    if roll < 0.02:
        return 0  # equal timestamps
    if roll < 0.07:
        return rng.randint(901, 3_600) * 1_000_000
    if roll < 0.09:
        return 900 * 1_000_000
    return rng.randint(1_000_000, 300_000_000) + rng.randint(0, 999_999)
