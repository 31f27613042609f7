"""Names are data, never code: SQL metacharacters, placeholders and any unicode in user ids,
projects, languages, branches, entities and user agents are stored and shown verbatim."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.heartbeat import validate_heartbeats
from jobs.store import store_heartbeats
from tests.derive import apply_all

NASTY = [
    "'); DROP TABLE heartbeats; --", '" OR 1=1 --', "%s", "%(user_ids)s", ":user_ids", "$1", "\\", "\\x00",
    "日本語のプロジェクト", "🚀 launch", "Ω≈ç√∫", "tab\there", "new\nline", "  padded  ", "a/b\\c", "NULL", "null",
    "{json}", "[1]", "\u202eRTL", "x" * 255,
]  # fmt: skip
names = st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(project=names, language=names, branch=names, entity=names, agent=names, user=names)
def test_names_are_stored_verbatim(db, project, language, branch, entity, agent, user):
    user_id = f"{user[:200]}-{uuid.uuid4().hex[:8]}"  # unique per example (tables are not truncated between)
    now = time.time()
    items = [
        {"user_id": user_id, "entity": entity, "time": now - 120, "project": project, "language": language[:64],
         "branch": branch, "user_agent": agent},
        {"user_id": user_id, "entity": entity, "time": now - 60, "project": project, "language": language[:64],
         "branch": branch, "user_agent": agent},
    ]  # fmt: skip
    validated = validate_heartbeats(items)
    if validated.rejected:  # e.g. a name that is only whitespace is absent, a lone surrogate is invalid
        assert all(r.reason for r in validated.rejected)
        return
    hb = validated.accepted[0]
    with db.begin() as conn:
        store_heartbeats(conn, validated.accepted, timeout_us=900_000_000)
        apply_all(conn)
        stored = conn.execute(sa.text("SELECT entity, project, language, branch, user_agent FROM heartbeats "
                                      "WHERE user_id = :u"), {"u": user_id}).all()  # fmt: skip
        assert {tuple(row) for row in stored} == {
            (hb["entity"], hb.get("project"), hb.get("language"), hb.get("branch"), hb.get("user_agent"))
        }
        if hb.get("project"):
            assert (
                conn.execute(
                    sa.text("SELECT name FROM projects WHERE user_id = :u"), {"u": user_id}
                ).scalar_one()
                == hb["project"]
            )
            assert conn.execute(sa.text("SELECT language FROM project_languages WHERE user_id = :u"),
                                {"u": user_id}).scalar_one() == (hb.get("language") or "Other")  # fmt: skip
        if hb.get("user_agent"):
            assert conn.execute(sa.text("SELECT user_agent FROM user_agents WHERE user_id = :u"),
                                {"u": user_id}).scalar_one() == hb["user_agent"]  # fmt: skip
