"""An independent computation of every table, in plain Python, straight from docs/spec.md.

It shares no code with the production path (which computes in SQL): its own normalisation, its
own identity and hash (the format docs/spec.md documents), its own durations. Tests compare the
database with it after the queues drain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _name(value: Any) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class Beat:
    user_id: str
    entity: str
    type: str
    category: str
    time_us: int
    project: str | None
    branch: str | None
    language: str | None
    is_write: bool
    user_agent: str | None
    machine: str | None = None

    @property
    def identity(self) -> tuple:
        return (
            self.user_id, self.entity, self.type, self.category, self.time_us,
            self.project, self.branch, self.language, self.is_write,
        )  # fmt: skip

    @property
    def hash(self) -> bytes:
        return identity_hash(*self.identity)

    @property
    def when(self) -> dt.datetime:
        return EPOCH + dt.timedelta(microseconds=self.time_us)

    def day(self, zone: str) -> dt.date:
        """The calendar day of the heartbeat in the user's time zone (docs/spec.md, section 3)."""
        return self.when.astimezone(ZoneInfo(zone)).date()


def identity_hash(user_id, entity, type_, category, time_us, project, branch, language, is_write) -> bytes:
    """The documented identity format (docs/spec.md, section 2), written independently of the SQL."""

    def field(value: str | None) -> str:
        return "-" if value is None else f"{len(value)}:{value}"

    text = ";".join([field(user_id), field(entity), field(type_), field(category), str(time_us),
                     field(project), field(branch), field(language), "t" if is_write else "f"])  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def time_us(value: float | int) -> int:
    """The JSON number's decimal value in microseconds, rounded half away from zero."""
    return int((Decimal(repr(value)) * 1_000_000).to_integral_value(ROUND_HALF_UP))


def normalise(item: dict[str, Any]) -> Beat:
    """SPEC section 1 normal form of a heartbeat the caller knows to be valid."""
    category = item.get("category")
    return Beat(
        user_id=item["user_id"],
        entity=item["entity"],
        type=item.get("type") or "file",
        category=(category or "coding").lower(),
        time_us=time_us(item["time"]),
        project=_name(item.get("project")),
        branch=_name(item.get("branch")),
        language=_name(item.get("language")),
        is_write=bool(item.get("is_write") or False),
        user_agent=_name(item.get("user_agent")),
        machine=_name(item.get("machine")),
    )


@dataclass
class Totals:
    seconds_us: int = 0
    count: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    def add(self, beat: Beat, credited_us: int) -> None:
        self.seconds_us += credited_us
        self.count += 1
        self.first = beat.when if self.first is None else min(self.first, beat.when)
        self.last = beat.when if self.last is None else max(self.last, beat.when)

    @property
    def seconds(self) -> float:
        return self.seconds_us / 1e6


@dataclass
class Reference:
    heartbeats: set[tuple] = field(default_factory=set)
    projects: dict[tuple[str, str], Totals] = field(default_factory=lambda: defaultdict(Totals))
    languages: dict[tuple[str, str, str], Totals] = field(default_factory=lambda: defaultdict(Totals))
    user_agents: dict[tuple[str, str], Totals] = field(default_factory=lambda: defaultdict(Totals))
    credited_us: dict[bytes, int] = field(default_factory=dict)
    #: (user, local day, project) -> the project's day row.
    project_days: dict[tuple[str, dt.date, str], Totals] = field(default_factory=lambda: defaultdict(Totals))
    #: (user, local day, user agent, raw project or '') -> the user agent's day row.
    user_agent_days: dict[tuple[str, dt.date, str, str], Totals] = field(
        default_factory=lambda: defaultdict(Totals)
    )
    #: (user, local day, category, machine or '') -> every heartbeat's day row (docs/spec.md, 4).
    activity_days: dict[tuple[str, dt.date, str, str], Totals] = field(
        default_factory=lambda: defaultdict(Totals)
    )


def compute(
    valid_items: list[dict[str, Any]], *, timeout_s: float = 900, aliases=None, zones=None
) -> Reference:
    """`aliases`: {(user_id, alias): project}; `zones`: {user_id: IANA time zone} (default UTC)."""
    aliases, zones = aliases or {}, zones or {}
    timeout_us = round(timeout_s * 1_000_000)
    unique: dict[tuple, Beat] = {}
    for item in valid_items:
        beat = normalise(item)
        unique.setdefault(beat.identity, beat)

    ref = Reference(heartbeats=set(unique))
    by_user: dict[str, list[Beat]] = defaultdict(list)
    for beat in unique.values():
        by_user[beat.user_id].append(beat)

    for user_id, beats in by_user.items():
        zone = zones.get(user_id, "UTC")
        beats.sort(key=lambda b: (b.time_us, b.hash))
        days = [beat.day(zone) for beat in beats]
        for index, beat in enumerate(beats):
            credited = 0
            if index + 1 < len(beats):
                gap = beats[index + 1].time_us - beat.time_us
                if days[index + 1] == days[index] and gap <= timeout_us:
                    credited = gap
            ref.credited_us[beat.hash] = credited
            if beat.project is not None:
                project = aliases.get((user_id, beat.project), beat.project)
                ref.projects[(user_id, project)].add(beat, credited)
                ref.project_days[(user_id, days[index], project)].add(beat, credited)
                ref.languages[(user_id, project, beat.language or "Other")].add(beat, credited)
            if beat.user_agent is not None:
                ref.user_agents[(user_id, beat.user_agent)].add(beat, credited)
                agent_day = (user_id, days[index], beat.user_agent, beat.project or "")
                ref.user_agent_days[agent_day].add(beat, credited)
            ref.activity_days[(user_id, days[index], beat.category, beat.machine or "")].add(beat, credited)
    return ref
