"""Reading the derived tables the way a user looks at them."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from db.queries import query


def select_projects(conn: sa.Connection) -> dict[str, list[sa.Row]]:
    return _by_user(conn.execute(query("report_projects")))


def select_languages(conn: sa.Connection) -> dict[str, list[sa.Row]]:
    return _by_user(conn.execute(query("report_languages")))


def select_editors(conn: sa.Connection) -> dict[str, list[sa.Row]]:
    return _by_user(conn.execute(query("report_editors")))


def count_heartbeats(conn: sa.Connection) -> int:
    return conn.execute(query("count_heartbeats")).scalar_one()


def _by_user(rows) -> dict[str, list[sa.Row]]:
    grouped: dict[str, list[sa.Row]] = defaultdict(list)
    for row in rows:
        grouped[row.user_id].append(row)
    return dict(grouped)
