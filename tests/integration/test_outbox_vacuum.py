"""The workers vacuum the outbox (worker.runtime.vacuum): dead rows left by applied deltas go, whatever
autovacuum does (it is off on some servers and visits a database once a minute at best)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.derive import apply_all
from tests.integration.test_store import items, store
from worker.runtime.vacuum import OutboxVacuum


def vacuums(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'derived_deltas'")
        ).scalar_one()


def test_dead_rows_past_the_threshold_are_vacuumed_and_a_clean_outbox_is_left_alone(db):
    before = vacuums(db)
    quiet = OutboxVacuum(lambda: db, interval=1, dead_rows=10**9)
    store(db, items(*range(0, 600, 30)))
    store(db, items(*range(0, 600, 30), user="bob"))
    with db.begin() as conn:
        assert apply_all(conn) > 0  # deletes every delta: dead rows
    assert quiet.run_once() == [], "below the threshold nothing is vacuumed"
    eager = OutboxVacuum(lambda: db, interval=1, dead_rows=1)
    deadline, done = time.monotonic() + 10, []
    while not done and time.monotonic() < deadline:  # the statistics arrive within a second or so
        done = eager.run_once()
        time.sleep(0.2)
    assert "derived_deltas" in done
    deadline = time.monotonic() + 10
    while vacuums(db) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vacuums(db) > before
