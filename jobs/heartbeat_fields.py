"""The field rules of SPEC section 1 as data, shared by the two validators of a heartbeat.

pydantic (jobs.heartbeat) is the reference that words every rejection; msgspec
(jobs.fast_validation) is a fast path that only ever accepts. Both build their types from these
constants, so a limit changed here changes both and they cannot drift apart.
"""

from __future__ import annotations

import datetime as dt

CATEGORIES = frozenset(
    {
        "coding",
        "building",
        "indexing",
        "debugging",
        "browsing",
        "running tests",
        "writing tests",
        "manual testing",
        "writing docs",
        "communicating",
        "code reviewing",
        "researching",
        "learning",
        "designing",
        "ai coding",
    }
)
TYPES = ("file", "domain", "url", "app")

MIN_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
#: How far in the future a heartbeat may be (client clocks drift).
MAX_FUTURE_SECONDS = 3600
MAX_INT = 2**31 - 1

#: Required text (at least one character, kept as given): field -> maximum length in characters.
REQUIRED_TEXT = {"user_id": 255, "entity": 4096}
#: Optional names, stripped of whitespace before their maximum length applies; empty means absent.
NAMES = {"project": 255, "branch": 255, "language": 64, "user_agent": 1024, "machine": 255}
#: Optional counts, 0 to MAX_INT.
COUNTS = ("lines", "lineno", "cursorpos", "project_root_count", "line_additions", "line_deletions")
