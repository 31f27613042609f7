"""Project aliases and user-owned project metadata."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from db.queries import query


def select_alias_target(conn: sa.Connection, user_id: str, alias: str) -> str | None:
    return conn.execute(query("select_alias_target"), {"user_id": user_id, "alias": alias}).scalar()


def select_aliases_of(conn: sa.Connection, user_id: str, project: str) -> list[str]:
    return list(conn.execute(query("select_aliases_of"), {"user_id": user_id, "project": project}).scalars())


def upsert_alias(conn: sa.Connection, user_id: str, alias: str, project: str) -> str | None:
    """Point `alias` at `project`; returns the project it pointed at before, if any."""
    params = {"user_id": user_id, "alias": alias, "project": project}
    return conn.execute(query("upsert_alias"), params).scalar()


def delete_alias(conn: sa.Connection, user_id: str, alias: str) -> str | None:
    return conn.execute(query("delete_alias"), {"user_id": user_id, "alias": alias}).scalar()


def list_aliases(conn: sa.Connection, user_id: str) -> list[sa.Row]:
    return list(conn.execute(query("list_aliases"), {"user_id": user_id}))


def update_project_metadata(
    conn: sa.Connection, user_id: str, name: str, fields: dict[str, Any]
) -> sa.Row | None:
    """Set the given user-owned columns (display_name, color, description, is_archived)."""
    params: dict[str, Any] = {"user_id": user_id, "name": name}
    for column in ("display_name", "color", "description", "is_archived"):
        params[f"set_{column}"] = column in fields
        params[column] = fields.get(column)
    return conn.execute(query("update_project_metadata"), params).one_or_none()


def list_projects(conn: sa.Connection, user_id: str) -> list[sa.Row]:
    return list(conn.execute(query("list_projects"), {"user_id": user_id}))
