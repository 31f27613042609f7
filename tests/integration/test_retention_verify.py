"""`hbw verify` finds drift and reprocessing repairs it; `hbw prune` drops raw heartbeats while
every total stays what it was, through reprocessing and alias changes."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from jobs.projects import add_alias
from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats

pytestmark = pytest.mark.slow


@pytest.fixture
def populated(db, settings, broker):
    stream = streams.generate(seed=23, users=6, days=6, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=300, broker=broker)
    drain(settings)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []
    return stream


def verify(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()  # drop what earlier commands printed
    code = cli.main(["verify", "--json", *args])
    out = capsys.readouterr()
    assert out.out, out.err
    return code, json.loads(out.out)


def totals(snap) -> dict:
    return {table: snap[table] for table in ("projects", "project_languages", "user_agents")}


def test_verify_finds_hand_made_drift_and_passes_after_reprocess(db, settings, populated, capsys):
    stream = populated
    code, report = verify(capsys)
    assert code == 0 and report["drifts"] == [] and report["user_days"] > 30

    with db.begin() as conn:
        conn.execute(sa.text("UPDATE project_days SET coding_us = coding_us + 5000000 "
                             "WHERE (user_id, day, project) = (SELECT user_id, day, project FROM project_days "
                             "ORDER BY 1, 2, 3 LIMIT 1)"))  # fmt: skip
        conn.execute(sa.text("DELETE FROM language_days WHERE ctid = (SELECT min(ctid) FROM language_days)"))
        conn.execute(
            sa.text(
                "UPDATE projects SET heartbeat_count = heartbeat_count + 1 "
                "WHERE (user_id, name) = (SELECT user_id, name FROM projects ORDER BY 1, 2 DESC LIMIT 1)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO user_agents (user_id, user_agent, agent_key, first_seen_at, last_seen_at, "
                "total_seconds, coding_us, heartbeat_count) "
                "VALUES ('user-001', 'ghost/1.0', hbw_text_key('ghost/1.0'), now(), now(), 1, 1000000, 1)"
            )
        )
    code, report = verify(capsys)
    assert code == 1
    tables = {d["table"] for d in report["drifts"]}
    assert {"project_days", "language_days", "projects", "user_agents"} <= tables
    assert report["drift_seconds"] >= 5.0
    ghost = next(d for d in report["drifts"] if d["name"] == "ghost/1.0")
    assert (ghost["stored_count"], ghost["expected_count"]) == (1, None)

    # the human output names the rows too, and the exit code is the same
    assert cli.main(["verify"]) == 1
    assert "drift in" in capsys.readouterr().out

    assert (
        cli.main(["reprocess", "--since", str(stream.first_day), "--until", str(stream.last_day), "--force"])
        == 0
    )
    drain(settings)
    # the stray user_agents row has no day rows behind it: only its own user's totals refresh removes it
    with db.begin() as conn:
        from db.derived import refresh_user_agents

        refresh_user_agents(conn, [{"user_id": "user-001", "user_agent": "ghost/1.0", "editor": None,
                                    "editor_version": None, "plugin": None, "plugin_version": None,
                                    "cli_version": None, "os": None, "is_browser_extension": False,
                                    "version_major": None, "version_minor": None, "version_patch": None,
                                    "version_prerelease": None}])  # fmt: skip
    code, report = verify(capsys)
    assert (code, report["drifts"]) == (0, [])
    assert diff(reference.compute(stream.valid), snapshot(db)) == []


def test_verify_skips_user_days_with_pending_work(db, settings, populated, capsys):
    with db.begin() as conn:
        user_id, day = conn.execute(
            sa.text("SELECT user_id, day FROM project_days ORDER BY 1, 2 LIMIT 1")
        ).one()
        conn.execute(sa.text("UPDATE project_days SET coding_us = 0 WHERE user_id = :u AND day = :d"),
                     {"u": user_id, "d": day})  # fmt: skip
        conn.execute(sa.text("INSERT INTO derived_deltas (job, user_id, day, name, coding_us, heartbeat_count) "
                             "VALUES ('projects', :u, :d, 'p', 0, 0)"), {"u": user_id, "d": day})  # fmt: skip
    code, report = verify(capsys, "--date", str(day))
    assert code == 0 and report["pending_user_days"] >= 1 and report["pending_users"] >= 1


def test_prune_then_reprocess_leaves_every_total_unchanged(db, settings, populated, capsys):
    stream = populated
    before = snapshot(db)
    cut = stream.first_day + (stream.last_day - stream.first_day) / 2
    assert cli.main(["prune", "--before", str(cut), "--dry-run"]) == 0
    assert "user-day(s) before" in capsys.readouterr().out
    assert cli.main(["prune", "--before", str(cut)]) == 0
    assert "raw heartbeat(s) deleted, derived totals kept" in capsys.readouterr().out

    after_prune = snapshot(db)
    assert after_prune["heartbeat_rows"] < before["heartbeat_rows"]
    assert totals(after_prune) == totals(before)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT min(day) FROM project_days")).scalar() < cut, "day rows are kept"
        assert (
            conn.execute(sa.text("SELECT count(*) FROM heartbeats WHERE time < :cut"), {"cut": cut}).scalar()
            == 0
        )

    assert (
        cli.main(["reprocess", "--since", str(stream.first_day), "--until", str(stream.last_day), "--force"])
        == 0
    )
    drain(settings)
    assert totals(snapshot(db)) == totals(before)
    code, report = verify(capsys)
    assert (code, report["drifts"]) == (0, [])

    assert cli.main(["prune", "--before", str(cut)]) == 0
    assert "pruned 0 user-day(s)" in capsys.readouterr().out, "a second prune has nothing left to do"


def test_alias_after_prune_counts_the_pruned_history(db, settings, populated):
    stream = populated
    expected = reference.compute(stream.valid)
    user_id, project = max(expected.projects, key=lambda k: expected.projects[k].seconds)
    cut = stream.last_day
    assert cli.main(["prune", "--before", str(cut)]) == 0
    with db.begin() as conn:
        add_alias(conn, user_id, project, "merged")
    snap = snapshot(db)
    with_alias = reference.compute(stream.valid, aliases={(user_id, project): "merged"})
    assert snap["projects"][(user_id, "merged")][2] == pytest.approx(
        with_alias.projects[(user_id, "merged")].seconds
    )
    assert (user_id, project) not in snap["projects"]


def test_a_late_heartbeat_for_a_pruned_day_changes_nothing(db, settings, broker, populated):
    stream = populated
    assert cli.main(["prune", "--before", str(stream.last_day)]) == 0
    before = totals(snapshot(db))
    late = {"user_id": "user-001", "entity": "late.py", "project": "late-project",
            "time": time.mktime(stream.first_day.timetuple()) + 3600}  # fmt: skip
    enqueue_heartbeats([late], batch_size=10, broker=broker)
    drain(settings)
    assert totals(snapshot(db)) == before
