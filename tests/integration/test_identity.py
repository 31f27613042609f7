"""SPEC section 2: which heartbeats are duplicates. The identity is computed in SQL
(hbw_identity, used by the store); here it is checked against an independent implementation of
the documented format (tests/reference.py), and end to end through the store."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.heartbeat import validate_heartbeat, validate_heartbeats
from jobs.store import store_heartbeats
from tests.reference import identity_hash, time_us

NOW = time.time()
BASE = {"user_id": "alice", "entity": "a.py", "time": 1_700_000_000.123456, "project": "web",
        "branch": "main", "language": "Python", "is_write": True, "category": "coding", "type": "file"}  # fmt: skip

SQL = sa.text(
    "SELECT hbw_identity(:user_id, :entity, :type, :category, :time_us, :project, :branch, :language, :is_write)"
)


def sql_identity(conn, hb: dict) -> bytes:
    params = {name: hb.get(name) for name in ("user_id", "entity", "type", "category", "project", "branch",
                                               "language", "is_write")}  # fmt: skip
    return bytes(conn.execute(SQL, {**params, "time_us": time_us(hb["time"])}).scalar_one())


def reference_identity(hb: dict) -> bytes:
    return identity_hash(hb["user_id"], hb["entity"], hb["type"], hb["category"], time_us(hb["time"]),
                         hb.get("project"), hb.get("branch"), hb.get("language"), hb["is_write"])  # fmt: skip


text = st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t and t.strip() == t)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user_id=text, entity=text, project=st.none() | text, language=st.none() | text, is_write=st.booleans(),
       micros=st.integers(0, 10**6 - 1))  # fmt: skip
def test_sql_identity_matches_the_documented_format(
    engine, user_id, entity, project, language, is_write, micros
):
    item = {**BASE, "user_id": user_id, "entity": entity, "project": project, "language": language,
            "is_write": is_write, "time": 1_700_000_000 + micros / 1e6}  # fmt: skip
    hb = validate_heartbeat(item, now=NOW)
    with engine.connect() as conn:
        assert sql_identity(conn, hb) == reference_identity(hb)


def key(engine, **changes) -> bytes:
    with engine.connect() as conn:
        return sql_identity(conn, validate_heartbeat({**BASE, **changes}, now=NOW))


def test_identity_fields_make_a_difference(engine):
    base = key(engine)
    for changes in ({"user_id": "bob"}, {"entity": "b.py"}, {"type": "app"}, {"category": "debugging"},
                    {"time": 1_700_000_000.123457}, {"project": "api"}, {"project": None}, {"branch": "dev"},
                    {"language": "Go"}, {"is_write": False}, {"project": "web;2:x"}):  # fmt: skip
        assert key(engine, **changes) != base, changes


def test_other_fields_and_normalisation_do_not(engine):
    base = key(engine)
    assert (
        key(engine, lineno=5, lines=100, user_agent="x", machine="m", dependencies="a,b", cursorpos=3) == base
    )
    assert key(engine, project="  web ", category="CODING") == base


def test_store_inlines_the_identity_function(engine):
    """hbw_identity must be inlined into the store's statement, not called once per heartbeat
    through the SQL-function executor (it was, while declared IMMUTABLE over a STABLE body, and
    that was a third of the store's cost). Inlined, the plan shows its body, not its name."""
    with engine.connect() as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                sa.text(
                    "EXPLAIN (VERBOSE) SELECT hbw_identity(u, e, 'file', 'coding', t, p, b, l, w) "
                    "FROM (VALUES ('alice', 'a.py', 1::bigint, 'web', 'main', 'Python', true), "
                    "             ('bob', 'b.py', 2, NULL, NULL, NULL, false)) "
                    "AS v(u, e, t, p, b, l, w)"
                )
            )
        )
    assert "sha256" in plan and "hbw_identity" not in plan, plan


def test_time_in_microseconds_rounds_half_away_from_zero():
    assert time_us(1_700_000_000.1234565) == 1_700_000_000_123_457  # decimal digits as sent
    assert time_us(1_700_000_000) == 1_700_000_000_000_000


def test_duplicates_are_stored_once_whatever_their_other_fields(db):
    items = [
        BASE,
        {**BASE, "lineno": 7},
        {**BASE, "project": " web "},
        {**BASE, "time": 1_700_000_000.1234562},  # the same microsecond
    ]
    with db.begin() as conn:
        result = store_heartbeats(conn, validate_heartbeats(items, now=NOW).accepted, timeout_us=900_000_000)
        assert (result.received, result.inserted) == (4, 1)
        stored = conn.execute(sa.text("SELECT dedup_hash, lineno FROM heartbeats")).one()
    assert bytes(stored.dedup_hash) == reference_identity(validate_heartbeat(BASE, now=NOW))
    assert stored.lineno is None, "the first copy in the batch is kept"
