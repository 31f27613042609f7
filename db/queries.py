"""Named SQL queries, loaded once from ``db/sql/*.sql``.

A file holds blocks that start with ``-- name: <query_name>``; the comment lines right after the
name say what the query is for. Parameters are SQLAlchemy ``:name`` binds; casts are written
``CAST(:x AS type)`` because ``:x::type`` is not a bind. Large lists on hot paths go as one JSON
text (:func:`json_param`), unpacked by PostgreSQL's C code: psycopg dumps a Python list into an
array element by element in Python, which was a third of an updater's CPU under live traffic.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import orjson
import sqlalchemy as sa

#: A user-day: (user_id, UTC day). The unit of derived work.
Key = tuple[str, dt.date]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def _all() -> dict[str, sa.TextClause]:
    queries: dict[str, sa.TextClause] = {}
    for entry in sorted(resources.files("db").joinpath("sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse_queries(entry.read_text(encoding="utf-8")).items():
                if name in queries:
                    raise ValueError(f"query {name!r} is defined in two files")
                queries[name] = sa.text(sql)
    return queries


def query(name: str) -> sa.TextClause:
    return _all()[name]


def key_params(keys: Sequence[Key]) -> dict[str, list]:
    """Bind parameters for queries that unnest (:user_ids, :days)."""
    return {"user_ids": [k[0] for k in keys], "days": [k[1] for k in keys]}


#: How far a day's times reach from any of them, and further (a local day lasts 25 hours at most):
#: the time window a statement names so PostgreSQL opens only those months of heartbeats.
WINDOW_MARGIN = dt.timedelta(days=2)


def window_params(keys: Sequence[Key]) -> dict[str, Any]:
    """key_params, and :since / :until: the keys' UTC days and WINDOW_MARGIN either side, which hold
    every time of those days in any zone."""
    days = [k[1] for k in keys]
    if not days:
        return {**key_params(keys), "since": "-infinity", "until": "infinity"}
    since = dt.datetime.combine(min(days), dt.time(), dt.UTC) - WINDOW_MARGIN
    until = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), dt.UTC) + WINDOW_MARGIN
    return {**key_params(keys), "since": since, "until": until}


def json_param(value: Any) -> str:
    """A list (of values or of row mappings) as one JSON bind parameter."""
    return orjson.dumps(value).decode()
