"""SPEC section 3 edge cases, run against the one place the rule lives (hbw_credited_heartbeats),
and through to the derived tables."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from jobs.heartbeat import validate_heartbeats
from jobs.store import store_heartbeats
from tests.derive import apply_all, recompute_all

MIDNIGHT = dt.datetime(2024, 3, 2, tzinfo=dt.UTC).timestamp()
T0 = MIDNIGHT - 3 * 3600  # 21:00 UTC on 2024-03-01


def beat(entity: str, at: float, project: str | None = "p", user: str = "alice", **more):
    return {"user_id": user, "entity": entity, "time": at, "project": project, **more}


def credited(engine: sa.Engine, items: list[dict], timeout_s: float = 900) -> dict[str, float]:
    """Store the heartbeats and return entity -> credited seconds, straight from the SQL rule."""
    validated = validate_heartbeats(items)
    assert not validated.rejected
    with engine.begin() as conn:
        store_heartbeats(conn, validated.accepted, timeout_us=round(timeout_s * 1e6))
        days = conn.execute(sa.text("SELECT user_id, day FROM user_days")).all()
        rows = conn.execute(
            sa.text(
                "SELECT h.entity, c.credited_us FROM hbw_credited_heartbeats("
                "CAST(:users AS text[]), CAST(:days AS date[]), :timeout) c "
                "JOIN heartbeats h ON h.dedup_hash = c.dedup_hash"
            ),
            {"users": [d[0] for d in days], "days": [d[1] for d in days], "timeout": round(timeout_s * 1e6)},
        ).all()
    return {entity: us / 1e6 for entity, us in rows}


def projects(engine: sa.Engine, timeout_s: float = 900) -> dict[str, float]:
    """Project totals by the live path (the store's deltas applied), which must be exactly what a
    full recomputation from the raw heartbeats gives."""
    query = sa.text("SELECT name, total_seconds, coding_us, heartbeat_count FROM projects")
    with engine.begin() as conn:
        apply_all(conn)
        live = {row[0]: tuple(row[1:]) for row in conn.execute(query)}
        recompute_all(conn, round(timeout_s * 1e6))
        full = {row[0]: tuple(row[1:]) for row in conn.execute(query)}
    assert live == full
    return {name: seconds for name, (seconds, _, _) in full.items()}


def test_gap_is_credited_to_the_earlier_heartbeat(db):
    assert credited(db, [beat("a", T0), beat("b", T0 + 120.5)]) == {"a": 120.5, "b": 0}


def test_lone_heartbeat_counts_zero(db):
    assert credited(db, [beat("a", T0)]) == {"a": 0}
    assert projects(db) == {"p": 0}


def test_timeout_boundary_is_inclusive(db):
    result = credited(db, [beat("a", T0), beat("b", T0 + 900), beat("c", T0 + 1800.000001)])
    assert result == {"a": 900, "b": 0, "c": 0}


def test_timeout_setting_is_respected(db):
    assert credited(db, [beat("a", T0), beat("b", T0 + 61)], timeout_s=60) == {"a": 0, "b": 0}


def test_nothing_crosses_midnight(db):
    result = credited(db, [beat("a", MIDNIGHT - 60), beat("b", MIDNIGHT + 60), beat("c", MIDNIGHT + 120)])
    assert result == {"a": 0, "b": 60, "c": 0}


def test_midnight_exactly_belongs_to_the_new_day(db):
    result = credited(db, [beat("a", MIDNIGHT - 0.000001), beat("b", MIDNIGHT), beat("c", MIDNIGHT + 30)])
    assert result == {"a": 0, "b": 30, "c": 0}


def test_project_switch(db):
    items = [
        beat("a", T0, "web"),
        beat("b", T0 + 60, "api"),
        beat("c", T0 + 180, "web"),
        beat("d", T0 + 200, "web"),
    ]
    assert credited(db, items) == {"a": 60, "b": 120, "c": 20, "d": 0}
    assert projects(db) == {"web": 80, "api": 120}


def test_heartbeats_without_project_count_nowhere_but_end_the_gap(db):
    items = [beat("a", T0, "web"), beat("b", T0 + 100, None), beat("c", T0 + 300, "web")]
    assert credited(db, items) == {"a": 100, "b": 200, "c": 0}
    assert projects(db) == {"web": 100}


def test_users_do_not_interleave(db):
    items = [beat("a1", T0, user="a"), beat("b1", T0 + 10, user="b"), beat("a2", T0 + 20, user="a")]
    assert credited(db, items) == {"a1": 20, "b1": 0, "a2": 0}


def test_equal_times_are_ordered_by_dedup_hash(db):
    items = [beat("x", T0, "web"), beat("y", T0, "api"), beat("z", T0 + 50, "web")]
    with db.begin() as conn:
        store_heartbeats(conn, validate_heartbeats(items).accepted, timeout_us=900_000_000)
        order = [
            e
            for (e,) in conn.execute(
                sa.text("SELECT entity FROM heartbeats WHERE entity IN ('x','y') ORDER BY dedup_hash")
            )
        ]
    result = credited(db, [])
    first, second = order
    assert (result[first], result[second], result["z"]) == (0, 50, 0)


@pytest.mark.parametrize("repeat", [2, 3])
def test_recomputing_is_idempotent(db, repeat):
    credited(db, [beat("a", T0), beat("b", T0 + 30), beat("c", T0 + 90, "q")])
    results = [projects(db) for _ in range(repeat)]
    assert results == [{"p": 90, "q": 0}] * repeat
