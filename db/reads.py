"""What `hbw serve` reads for users' tools (db/sql/reads.sql): derived tables, one statement each."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from db.queries import query


def _rows(result: sa.CursorResult) -> list[dict[str, Any]]:
    names = list(result.keys())
    return [dict(zip(names, row, strict=True)) for row in result]


def select_projects_page(
    conn: sa.Connection,
    user_id: str,
    *,
    search: str | None,
    language: str | None,
    include_archived: bool,
    sort: str,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """A page of a user's projects, and how many match in all."""
    params = {"user_id": user_id, "search": search, "language": language, "sort": sort}
    params |= {"include_archived": include_archived, "limit": limit, "offset": offset}
    rows = _rows(conn.execute(query("select_projects_page"), params))
    if not rows and offset:  # past the last page: count them anyway
        rows_ = _rows(conn.execute(query("select_projects_page"), {**params, "limit": 1, "offset": 0}))
        return [], rows_[0]["matching"] if rows_ else 0
    matching = rows[0]["matching"] if rows else 0
    for row in rows:
        del row["matching"]
    return rows, matching


def select_project(conn: sa.Connection, user_id: str, name: str) -> dict[str, Any] | None:
    """The project `name` names, directly or as an alias of it."""
    rows = _rows(conn.execute(query("select_project"), {"user_id": user_id, "name": name}))
    return rows[0] if rows else None


def select_project_languages(conn: sa.Connection, user_id: str, project: str) -> list[dict[str, Any]]:
    return _rows(conn.execute(query("select_project_languages"), {"user_id": user_id, "project": project}))


def select_languages(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    return _rows(conn.execute(query("select_languages"), {"user_id": user_id}))


def select_user_agents(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    return _rows(conn.execute(query("select_user_agents"), {"user_id": user_id}))


def select_user_summary(conn: sa.Connection, user_id: str) -> dict[str, Any]:
    return _rows(conn.execute(query("select_user_summary"), {"user_id": user_id}))[0]


def select_local_today(conn: sa.Connection, user_id: str) -> dict[str, Any]:
    """zone, day (today on the user's calendar), starts and ends (that day's first instant, the next's)."""
    return _rows(conn.execute(query("select_local_today"), {"user_id": user_id}))[0]


def select_day_breakdown(conn: sa.Connection, user_id: str, since, until) -> list[dict[str, Any]]:
    """kind (categories, machines, projects, languages, editors, operating_systems), day, name, coding_us."""
    params = {"user_id": user_id, "since": since, "until": until}
    return _rows(conn.execute(query("select_day_breakdown"), params))


def select_local_days(conn: sa.Connection, user_id: str, since, until) -> list[dict[str, Any]]:
    """zone, day, starts, ends for each day of since..until on the user's calendar."""
    params = {"user_id": user_id, "since": since, "until": until}
    return _rows(conn.execute(query("select_local_days"), params))


def select_project_day_breakdown(conn: sa.Connection, user_id: str, project: str, since, until) -> list[dict]:
    params = {"user_id": user_id, "project": project, "since": since, "until": until}
    return _rows(conn.execute(query("select_project_day_breakdown"), params))


def select_range_breakdown(conn: sa.Connection, user_id: str, since, until) -> list[dict[str, Any]]:
    """kind, name, coding_us summed over since..until; kind 'days': each day's grand total."""
    params = {"user_id": user_id, "since": since, "until": until}
    return _rows(conn.execute(query("select_range_breakdown"), params))


def select_first_day(conn: sa.Connection, user_id: str):
    return conn.execute(query("select_first_day"), {"user_id": user_id}).scalar()


def select_range_bounds(conn: sa.Connection, user_id: str, since, until) -> dict[str, Any]:
    params = {"user_id": user_id, "since": since, "until": until}
    return _rows(conn.execute(query("select_range_bounds"), params))[0]


def select_all_time(conn: sa.Connection, user_id: str, project: str | None) -> dict[str, Any]:
    """coding_us, days (with time) and first_day of the user (or of one of their projects)."""
    return _rows(conn.execute(query("select_all_time"), {"user_id": user_id, "project": project}))[0]


def select_day_heartbeats(conn: sa.Connection, user_id: str, day, timeout_us: int) -> list[dict[str, Any]]:
    """The raw heartbeats of one of the user's days, in order, each with its credited_us."""
    params = {"user_id": user_id, "day": day, "timeout_us": timeout_us}
    return _rows(conn.execute(query("select_day_heartbeats"), params))


def select_machines(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    return _rows(conn.execute(query("select_machines"), {"user_id": user_id}))


def select_editors(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    return _rows(conn.execute(query("select_editors"), {"user_id": user_id}))
