"""Project aliases and user-owned project metadata (the Python API behind `hbw alias` and
`hbw project`). Functions take a connection; the caller owns the transaction.

An alias change needs no raw heartbeats: day rows are keyed by the raw project name, so only the
totals of the alias and of its old and new project are re-summed, in the same transaction, under
the same per-user locks the derived jobs take. When it commits, no `projects` row is left under an
alias name, and it works the same for pruned days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from db import derived as db_derived
from db import projects as db_projects
from db.derived_jobs import DERIVED_JOBS
from jobs.errors import Refused
from jobs.locks import job_lock

COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class ProjectError(Refused):
    """A request about aliases or projects that cannot be honoured; the message says why."""


class UnknownProject(ProjectError):
    """The user has no such project (projects appear with their heartbeats)."""


class AliasRefused(ProjectError):
    """An alias that would point at itself, chain or make a cycle."""


@dataclass(frozen=True)
class AliasChange:
    user_id: str
    alias: str
    project: str | None  # None when the alias was removed
    previous: str | None  # what the alias pointed at before


def _name(value: str, what: str) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if not name or len(name) > 255 or "\x00" in name:
        raise ProjectError(f"{what} must be 1 to 255 characters (after stripping spaces), without NUL")
    return name


def _lock_totals(conn: sa.Connection, user_id: str) -> None:
    """The locks the project and language jobs take for this user, in one global order."""
    db_derived.lock_users(
        conn, sorted(job_lock(job, user_id) for job in (j.name for j in DERIVED_JOBS if j.by_project))
    )


def _refresh(conn: sa.Connection, user_id: str, names: list[str | None]) -> None:
    pairs = sorted({(user_id, name) for name in names if name})
    db_derived.refresh_projects(conn, pairs)
    db_derived.refresh_project_languages(conn, pairs)


def add_alias(conn: sa.Connection, user_id: str, alias: str, project: str) -> AliasChange:
    """Count heartbeats of project `alias` towards `project` from now on, and for all history."""
    alias, project = _name(alias, "the alias"), _name(project, "the project")
    if alias == project:
        raise AliasRefused(f"{alias!r} cannot be an alias of itself")
    _lock_totals(conn, user_id)
    target = db_projects.select_alias_target(conn, user_id, project)
    if target == alias:
        raise AliasRefused(
            f"{project!r} is already an alias of {alias!r}: the other way round would be a cycle"
        )
    if target is not None:
        raise AliasRefused(
            f"{project!r} is itself an alias of {target!r}; aliases do not chain: "
            f"make {alias!r} an alias of {target!r} instead"
        )
    sources = db_projects.select_aliases_of(conn, user_id, alias)
    if sources:
        raise AliasRefused(
            f"{alias!r} has aliases of its own ({', '.join(map(repr, sources))}); aliases do not chain: "
            f"point them at {project!r} first, or remove them"
        )
    previous = db_projects.upsert_alias(conn, user_id, alias, project)
    _refresh(conn, user_id, [alias, project, previous])
    return AliasChange(user_id, alias, project, previous)


def remove_alias(conn: sa.Connection, user_id: str, alias: str) -> AliasChange:
    """Count heartbeats of project `alias` as their own project again."""
    alias = _name(alias, "the alias")
    _lock_totals(conn, user_id)
    previous = db_projects.delete_alias(conn, user_id, alias)
    if previous is None:
        raise ProjectError(f"user {user_id!r} has no alias {alias!r}")
    _refresh(conn, user_id, [alias, previous])
    return AliasChange(user_id, alias, None, previous)


def list_aliases(conn: sa.Connection, user_id: str) -> list[tuple[str, str]]:
    return [(row.alias, row.project) for row in db_projects.list_aliases(conn, user_id)]


def set_project_metadata(conn: sa.Connection, user_id: str, project: str, **fields: Any) -> dict[str, Any]:
    """Set any of display_name, color ('#rrggbb'), description, is_archived of an existing project.

    Processing never overwrites these (it sets color once, when it creates the row). An empty
    display_name or description clears it.
    """
    unknown = set(fields) - {"display_name", "color", "description", "is_archived"}
    if unknown:
        raise ProjectError(f"unknown project field(s): {', '.join(sorted(unknown))}")
    if "color" in fields and not (isinstance(fields["color"], str) and COLOR.match(fields["color"])):
        raise ProjectError(f"color must look like #1f77b4, not {fields['color']!r}")
    for text in ("display_name", "description"):
        if text in fields:
            value = fields[text]
            if value is not None and (not isinstance(value, str) or "\x00" in value or len(value) > 1000):
                raise ProjectError(f"{text} must be text of at most 1000 characters")
            fields[text] = value or None
    if "is_archived" in fields and not isinstance(fields["is_archived"], bool):
        raise ProjectError("is_archived must be true or false")
    if "color" in fields:
        fields["color"] = fields["color"].lower()
    row = db_projects.update_project_metadata(conn, user_id, _name(project, "the project"), fields)
    if row is None:
        raise UnknownProject(
            f"user {user_id!r} has no project {project!r} (projects appear with their heartbeats)"
        )
    return dict(row._mapping)


def set_aliases(conn: sa.Connection, user_id: str, project: str, aliases: list[str]) -> None:
    """Make exactly `aliases` count towards `project`: the missing ones added, the others removed
    (each through add_alias / remove_alias, in the caller's transaction)."""
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ProjectError("aliases must be a list of project names")
    wanted = {_name(alias, "an alias") for alias in aliases}
    current = set(db_projects.select_aliases_of(conn, user_id, project))
    for alias in sorted(current - wanted):
        remove_alias(conn, user_id, alias)
    for alias in sorted(wanted - current):
        add_alias(conn, user_id, alias, project)


def list_projects(conn: sa.Connection, user_id: str) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in db_projects.list_projects(conn, user_id)]
