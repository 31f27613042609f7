"""The store / delta / recompute protocol under what at-least-once delivery brings: redelivery,
out-of-order arrival, applying beside stores, and recomputations racing stores and reprocessing."""

from __future__ import annotations

import datetime as dt
import threading
import time

import sqlalchemy as sa

from db import stale as db_stale
from db.derived_jobs import DERIVED_JOBS
from jobs import deltas
from jobs.heartbeat import validate_heartbeats
from jobs.recompute import lock_users, recompute
from jobs.store import store_heartbeats
from tests import reference
from tests.derive import apply_all
from tests.tables import diff, snapshot

DAY = dt.date(2024, 3, 1)
T0 = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC).timestamp()
TIMEOUT_US = 900_000_000


def items(*offsets: float, user: str = "alice", project: str = "web") -> list[dict]:
    return [{"user_id": user, "entity": f"f{o}", "time": T0 + o, "project": project, "user_agent": "vim/9.0"}
            for o in offsets]  # fmt: skip


def store(engine, batch: list[dict]):
    with engine.begin() as conn:
        return store_heartbeats(conn, validate_heartbeats(batch).accepted, timeout_us=TIMEOUT_US)


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def total(engine, name="web") -> tuple | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT total_seconds, heartbeat_count FROM projects WHERE name = :n"), {"n": name}
        ).one_or_none()
    return tuple(row) if row else None


def apply(engine) -> int:
    with engine.begin() as conn:
        return apply_all(conn)


def test_store_is_idempotent_and_writes_each_delta_once(db):
    first = store(db, items(0, 60, 60))
    assert (first.received, first.inserted, first.duplicates) == (3, 2, 1)
    written = count(db, "derived_deltas")
    assert written == len(DERIVED_JOBS), "one delta per job for the user-day"
    again = store(db, items(0, 60))
    assert again.inserted == 0 and count(db, "derived_deltas") == written
    assert count(db, "heartbeats") == 2


def test_applying_deltas_again_adds_nothing(db):
    store(db, items(0, 60))
    assert apply(db) > 0 and total(db) == (60, 2)
    assert apply(db) == 0 and total(db) == (60, 2), "a redelivered update finds nothing to add"
    store(db, items(0, 60))  # a redelivered store
    assert apply(db) == 0 and total(db) == (60, 2)


def test_out_of_order_heartbeats_move_the_credit_exactly(db):
    # (another editor and language in the middle: deltas that only move a credit away from a row)
    other = [{**hb, "user_agent": "emacs/29.1", "language": "Go"} for hb in items(150, 310, project="api")]
    batches = [
        items(0, 300),
        items(120, project="api"),
        items(60),
        other,
        items(1500),
        items(301, 299, project="api"),
    ]
    seen: list[dict] = []
    for batch in batches:  # each applied on its own: only the neighbourhood of each new one changes
        store(db, batch)
        apply(db)
        seen += batch
        assert diff(reference.compute(seen), snapshot(db)) == []


def test_deltas_committed_while_an_update_runs_are_applied_by_the_next_one(db):
    store(db, items(0, 60))
    with db.connect() as updater:
        updater.begin()
        assert deltas.apply(updater, "projects").users == ["alice"]
        store(db, items(120))  # commits while the update holds its locks: the store does not wait
        updater.commit()
    assert total(db) == (60, 2)
    apply(db)
    assert diff(reference.compute(items(0, 60, 120)), snapshot(db)) == []


def test_a_batch_says_whether_deltas_may_be_left(db, monkeypatch):
    """An updater stops after a batch that took everything (no second, empty transaction per
    wake), and goes on when the batch was full or another worker held some users."""
    store(db, items(0, 60))
    store(db, items(0, 60, user="bob"))
    with db.connect() as other:  # another worker busy with bob's languages
        other.begin()
        assert deltas.apply(other, "languages", users=["bob"]).users == ["bob"]
        with db.begin() as conn:
            result = deltas.apply(conn, "languages")
        assert (result.users, result.more) == (["alice"], True)
        other.commit()
    with db.begin() as conn:
        result = deltas.apply(conn, "projects")
    assert (result.users, result.more) == (["alice", "bob"], False)
    store(db, items(120, 180))
    monkeypatch.setattr(deltas, "ROWS_PER_BATCH", 1)
    with db.begin() as conn:
        assert deltas.apply(conn, "projects").more, "a full batch: there may be more"


def test_a_recomputation_drops_the_deltas_it_already_counts(db):
    store(db, items(0, 60))
    store(db, items(90))
    with db.begin() as conn:
        db_stale.mark_stale(conn, [("alice", DAY)])
        result = recompute(conn, [("alice", DAY)], timeout_us=TIMEOUT_US)
    assert result.recomputed == [("alice", DAY)] and count(db, "derived_deltas") == 0
    assert apply(db) == 0
    assert diff(reference.compute(items(0, 60, 90)), snapshot(db)) == []


def waiting_for_a_lock(engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE '%pg_advisory_xact_lock%'"
        )).scalar_one())  # fmt: skip


def test_a_store_waits_for_a_recomputation_of_its_user(db):
    store(db, items(0, 60))
    with db.connect() as recomputing:
        recomputing.begin()
        lock_users(recomputing, ["alice"])
        storing = threading.Thread(target=store, args=(db, items(120)))
        storing.start()
        deadline = time.monotonic() + 10
        while not waiting_for_a_lock(db):  # the store is blocked on the user's store lock
            assert time.monotonic() < deadline and storing.is_alive(), "the store did not wait"
            time.sleep(0.05)
        db_stale.mark_stale(recomputing, [("alice", DAY)])
        recompute(recomputing, [("alice", DAY)], timeout_us=TIMEOUT_US)
        recomputing.commit()
    storing.join(10)
    apply(db)
    assert diff(reference.compute(items(0, 60, 120)), snapshot(db)) == []


def test_duplicate_recompute_messages_coalesce(db):
    store(db, items(0, 60))
    with db.begin() as conn:
        db_stale.mark_stale(conn, [("alice", DAY)])
    with db.begin() as conn:
        first = recompute(conn, [("alice", DAY)], timeout_us=TIMEOUT_US)
    with db.begin() as conn:
        second = recompute(conn, [("alice", DAY)], timeout_us=TIMEOUT_US)
    assert first.recomputed == [("alice", DAY)] and first.changed > 0
    assert second.recomputed == [] and second.changed == 0


def test_marking_a_day_again_during_its_recomputation_forces_a_rerun(db):
    store(db, items(0, 60))
    keys = [("alice", DAY)]
    with db.begin() as conn:
        db_stale.mark_stale(conn, keys)
    with db.connect() as job:
        job.begin()
        read = db_stale.select_stale(job, keys)
        with db.begin() as other:  # a reprocess marks the day again meanwhile
            db_stale.mark_stale(other, keys)
        assert db_stale.delete_stale(job, read) == keys, "the newer mark must not be deleted"
        job.commit()
    assert count(db, "stale_days") == 1


def test_orphans_are_claimed_once(db):
    with db.begin() as conn:
        db_stale.mark_stale(conn, [("alice", DAY), ("bob", DAY)])
    zero, hour = dt.timedelta(0), dt.timedelta(hours=1)
    with db.begin() as conn:
        assert sorted(db_stale.claim_orphans(conn, min_age=zero, stale_after=hour)) == [
            ("alice", DAY),
            ("bob", DAY),
        ]
    with db.begin() as conn:
        assert db_stale.claim_orphans(conn, min_age=zero, stale_after=hour) == []
        assert sorted(db_stale.claim_orphans(conn, min_age=zero, stale_after=zero)) == [
            ("alice", DAY), ("bob", DAY)
        ], "sent but still stale after stale_after: sent again"  # fmt: skip


def test_user_metadata_survives_updates_and_recomputation(db):
    store(db, items(0, 60))
    apply(db)
    with db.begin() as conn:
        color = conn.execute(sa.text("SELECT color FROM projects")).scalar()
        conn.execute(sa.text("UPDATE projects SET display_name = 'Web', color = '#000000', description = 'd', "
                             "is_archived = true"))  # fmt: skip
    store(db, items(120))
    apply(db)
    with db.begin() as conn:
        db_stale.mark_stale(conn, [("alice", DAY)])
        recompute(conn, [("alice", DAY)], timeout_us=TIMEOUT_US)
        row = conn.execute(
            sa.text("SELECT display_name, color, description, is_archived, total_seconds FROM projects")
        ).one()
    assert tuple(row) == ("Web", "#000000", "d", True, 120)
    assert color.startswith("#") and len(color) == 7
