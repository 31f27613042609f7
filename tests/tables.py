"""Reading the database's tables in the reference's shape, and comparing the two."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobs.user_agents import parse_user_agent
from tests.reference import Reference

TOLERANCE_S = 0.01
PARSED = (
    "editor", "editor_version", "plugin", "plugin_version", "cli_version", "os", "is_browser_extension",
    "version_major", "version_minor", "version_patch", "version_prerelease",
)  # fmt: skip


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every table a user sees, as plain values (for 'nothing changed' comparisons too)."""
    with engine.connect() as conn:

        def rows(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.execute(sa.text(sql))]

        return {
            "heartbeats": set(
                rows(
                    "SELECT user_id, entity, type, category, (extract(epoch FROM time) * 1000000)::bigint,"
                    " project, branch, language, is_write FROM heartbeats"
                )
            ),
            "heartbeat_rows": rows("SELECT count(*) FROM heartbeats")[0][0],
            "projects": {
                (r[0], r[1]): r[2:]
                for r in rows(
                    "SELECT user_id, name, first_heartbeat_at, last_heartbeat_at, total_seconds, heartbeat_count,"
                    " color, display_name, description, is_archived FROM projects"
                )
            },
            "project_languages": {
                (r[0], r[1], r[2]): r[3:]
                for r in rows(
                    "SELECT user_id, project, language, first_seen_at, last_seen_at, total_seconds,"
                    " heartbeat_count FROM project_languages"
                )
            },
            "user_agents": {
                (r[0], r[1]): r[2:]
                for r in rows(
                    f"SELECT user_id, user_agent, first_seen_at, last_seen_at, total_seconds, heartbeat_count,"
                    f" {', '.join(PARSED)} FROM user_agents"
                )
            },
            "user_agent_days": {
                (r[0], r[1], r[2], r[3]): r[4:]
                for r in rows(
                    "SELECT user_id, day, user_agent, project, first_at, last_at, coding_us / 1e6::float8,"
                    " heartbeat_count FROM user_agent_days"
                )
            },
            "activity_days": {
                (r[0], r[1], r[2], r[3]): r[4:]
                for r in rows(
                    "SELECT user_id, day, category, machine, first_at, last_at, coding_us / 1e6::float8, heartbeat_count"
                    " FROM activity_days"
                )
            },
            "pending": rows(
                "SELECT (SELECT count(*) FROM stale_days) + (SELECT count(*) FROM derived_deltas)"
            )[0][0],
        }


def diff(ref: Reference, snap: dict[str, Any]) -> list[str]:
    """Human-readable differences between the reference and a snapshot (empty when equal)."""
    problems: list[str] = []
    if snap["heartbeats"] != ref.heartbeats:
        missing, extra = ref.heartbeats - snap["heartbeats"], snap["heartbeats"] - ref.heartbeats
        problems.append(
            f"heartbeats: {len(missing)} missing, {len(extra)} extra, e.g. {list(missing or extra)[:2]}"
        )
    if snap["heartbeat_rows"] != len(ref.heartbeats):
        problems.append(
            f"heartbeats: {snap['heartbeat_rows']} rows for {len(ref.heartbeats)} distinct heartbeats"
        )

    def compare(table: str, expected: dict, actual: dict, extra_check=None) -> None:
        if set(expected) != set(actual):
            missing, extra = set(expected) - set(actual), set(actual) - set(expected)
            problems.append(f"{table}: keys differ: missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}")
        for key in sorted(set(expected) & set(actual)):
            totals, row = expected[key], actual[key]
            first, last, seconds, count = row[:4]
            if (first, last, count) != (totals.first, totals.last, totals.count) or abs(
                seconds - totals.seconds
            ) > TOLERANCE_S:
                problems.append(
                    f"{table}{key}: got first={first} last={last} seconds={seconds} count={count}, want "
                    f"first={totals.first} last={totals.last} seconds={totals.seconds} count={totals.count}"
                )
            if extra_check:
                extra_check(key, row)

    projects = {key: (r[0], r[1], r[2], r[3]) for key, r in snap["projects"].items()}
    compare("projects", ref.projects, projects)
    compare("project_languages", ref.languages, snap["project_languages"])

    def parsed(key, row) -> None:
        want = parse_user_agent(key[1]).as_row()
        got = dict(zip(PARSED, row[4:], strict=True))
        if got != want:
            problems.append(f"user_agents{key}: parsed {got}, want {want}")

    compare("user_agents", ref.user_agents, snap["user_agents"], parsed)
    compare("user_agent_days", ref.user_agent_days, snap["user_agent_days"])
    compare("activity_days", ref.activity_days, snap["activity_days"])
    if snap["pending"]:
        problems.append(f"{snap['pending']} derived updates still pending")
    return problems
