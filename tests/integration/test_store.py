"""The store/recompute protocol under the failures at-least-once delivery brings: redelivery,
a crash between commit and send, and a store landing while a recomputation runs."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from db import derived as db_derived
from db import pending as db_pending
from jobs.heartbeat import validate_heartbeats
from jobs.recompute import lock_key, recompute
from jobs.store import store_heartbeats

DAY = dt.date(2024, 3, 1)
T0 = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC).timestamp()
TIMEOUT_US = 900_000_000


def beats(*offsets: float, user: str = "alice", project: str = "web"):
    items = [{"user_id": user, "entity": f"f{o}", "time": T0 + o, "project": project} for o in offsets]
    return validate_heartbeats(items).accepted


def pending(engine) -> set[tuple]:
    with engine.connect() as conn:
        return {
            tuple(r)
            for r in conn.execute(
                sa.text("SELECT job, user_id, day, enqueued_at IS NOT NULL FROM pending_recomputes")
            )
        }


def total(engine, name="web") -> float | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT total_seconds FROM projects WHERE name = :n"), {"n": name}
        ).scalar()


def test_store_is_idempotent_and_marks_each_job_pending(db):
    with db.begin() as conn:
        first = store_heartbeats(conn, beats(0, 60, 60))
    assert (first.received, first.inserted, first.duplicates) == (3, 2, 1)
    assert sorted(first.to_enqueue) == [
        (job, "alice", DAY) for job in ("languages", "projects", "user_agents")
    ]
    with db.begin() as conn:
        again = store_heartbeats(conn, beats(0, 60))
    assert again.inserted == 0
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar() == 2
        assert conn.execute(sa.text("SELECT max(generation) FROM pending_recomputes")).scalar() == 1


def test_redelivery_after_crash_between_commit_and_send_sends_again(db):
    with db.begin() as conn:
        store_heartbeats(conn, beats(0, 60))
    # ...the worker dies here: committed, nothing sent, nothing marked. Dramatiq redelivers:
    with db.begin() as conn:
        redelivered = store_heartbeats(conn, beats(0, 60))
    assert redelivered.inserted == 0
    assert len(redelivered.to_enqueue) == 3, "the retry must send what the crashed attempt did not"
    with db.begin() as conn:
        db_pending.mark_enqueued(conn, redelivered.to_enqueue)
    with db.begin() as conn:
        assert store_heartbeats(conn, beats(0, 60, 120)).to_enqueue == [], (
            "already sent: no duplicate message"
        )


def test_orphans_are_claimed_once(db):
    with db.begin() as conn:
        store_heartbeats(conn, beats(0, 60))
    zero = dt.timedelta(0)
    with db.begin() as conn:
        claimed = db_pending.claim_orphans(
            conn, jobs=["projects", "languages"], min_age=zero, stale_after=dt.timedelta(hours=1)
        )
    assert sorted(claimed) == [("languages", "alice", DAY), ("projects", "alice", DAY)]
    with db.begin() as conn:
        assert (
            db_pending.claim_orphans(conn, jobs=["projects"], min_age=zero, stale_after=dt.timedelta(hours=1))
            == []
        )
        assert db_pending.claim_orphans(conn, jobs=["projects"], min_age=zero, stale_after=zero) == [
            ("projects", "alice", DAY)
        ], "sent but still pending after stale_after: sent again"


def test_store_landing_during_a_recomputation_forces_a_rerun(db):
    with db.begin() as conn:
        store_heartbeats(conn, beats(0, 60))
    keys = [("alice", DAY)]
    with db.connect() as job:
        job.begin()
        db_derived.lock_users(job, [lock_key("projects", "alice")])
        read = db_pending.select_pending(job, "projects", keys)
        changed = db_derived.recompute_days(job, "projects", keys, TIMEOUT_US)
        db_derived.refresh_projects(job, changed)

        with db.begin() as other:  # a new batch for the same user-day commits meanwhile
            store_heartbeats(other, beats(120))

        rerun = db_pending.delete_pending(job, "projects", read)
        job.commit()
    assert rerun == keys, "the job must not mark done a user-day that gained heartbeats"
    assert total(db) == 60  # what the job saw
    with db.begin() as conn:
        result = recompute(conn, "projects", keys, timeout_us=TIMEOUT_US)
    assert (result.recomputed, result.rerun) == (keys, [])
    assert total(db) == 120
    assert ("projects", "alice", DAY, True) not in pending(db)


def test_duplicate_recompute_messages_coalesce(db):
    with db.begin() as conn:
        store_heartbeats(conn, beats(0, 60))
    with db.begin() as conn:
        first = recompute(conn, "projects", [("alice", DAY)], timeout_us=TIMEOUT_US)
    with db.begin() as conn:
        second = recompute(conn, "projects", [("alice", DAY)], timeout_us=TIMEOUT_US)
    assert first.recomputed == [("alice", DAY)] and first.changed == 1
    assert second.recomputed == [] and second.changed == 0


def test_user_metadata_survives_recomputation(db):
    with db.begin() as conn:
        store_heartbeats(conn, beats(0, 60))
        recompute(conn, "projects", [("alice", DAY)], timeout_us=TIMEOUT_US)
        color = conn.execute(sa.text("SELECT color FROM projects")).scalar()
        conn.execute(
            sa.text(
                "UPDATE projects SET display_name = 'Web', color = '#000000', "
                "description = 'd', is_archived = true"
            )
        )
    with db.begin() as conn:
        store_heartbeats(conn, beats(120))
        recompute(conn, "projects", [("alice", DAY)], timeout_us=TIMEOUT_US)
        row = conn.execute(
            sa.text("SELECT display_name, color, description, is_archived, total_seconds FROM projects")
        ).one()
    assert tuple(row) == ("Web", "#000000", "d", True, 120)
    assert color.startswith("#") and len(color) == 7
