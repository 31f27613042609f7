"""The store's deltas on random batches: equal to the reference after each batch is applied, and
to the difference of two full recomputations around each store (SPEC section 3)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import sqlalchemy as sa

from jobs.heartbeat import validate_heartbeats
from jobs.store import store_heartbeats
from tests import reference
from tests.integration.test_store import apply, items, store
from tests.tables import diff, snapshot


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_around_stored_rows_equal_the_reference(db, seed):
    """The store reads the stored rows among and right around each user-day's new ones: batches of
    random size and order, with equal times, gaps over the timeout and midnight inside the spans,
    each applied on its own, leave exactly what the reference computes."""
    rng = random.Random(seed)
    near = [-90, -30, 0, 30, 30, 45, 600, 1000, 1000, 2500]  # ties, gaps, over the timeout
    # around midnight and after it: T0 is 10:00, so 14-18 hours later
    offsets = [rng.choice(near) + 50_400 + 3600 * rng.randint(0, 4) for _ in range(120)]
    beats = [
        items(o, user=rng.choice(["alice", "bob"]), project=rng.choice(["web", "api"]))[0] for o in offsets
    ]
    for hb in beats:
        hb["entity"] = rng.choice(["a", "b", "c"])  # same time and entity: a duplicate, else a tie
    seen: list[dict] = []
    while beats:
        size = rng.choice([1, 2, 3, 10, 40])
        batch, beats = beats[:size], beats[size:]
        if rng.random() < 0.5:
            batch.sort(key=lambda hb: hb["time"])
        store(db, batch)
        apply(db)
        seen += batch
        assert diff(reference.compute(seen), snapshot(db)) == []


MIDNIGHT = dt.datetime(2024, 3, 2, tzinfo=dt.UTC).timestamp()


def day_rows(conn, timeout_us: int) -> dict[tuple, tuple[int, int]]:
    """What a full recomputation gives for every unpruned user-day: key -> (coding_us, count)."""
    keys = conn.execute(sa.text("SELECT user_id, day FROM user_days WHERE pruned_at IS NULL")).all()
    if not keys:
        return {}
    recomputed = sa.text(
        "SELECT job, user_id, day, name, language, coding_us, heartbeat_count FROM hbw_day_rows(:u, :d, :t)"
    )
    rows = conn.execute(recomputed, {"u": [k[0] for k in keys], "d": [k[1] for k in keys], "t": timeout_us})
    return {tuple(r[:5]): (r[5], r[6]) for r in rows}


def take_deltas(conn) -> dict[tuple, tuple[int, int]]:
    """The outbox summed per derived row (and emptied)."""
    summed: dict[tuple, list[int]] = {}
    deleted = sa.text(
        "DELETE FROM derived_deltas RETURNING job, user_id, day, name, language, coding_us, heartbeat_count"
    )
    for r in conn.execute(deleted):
        total = summed.setdefault(tuple(r[:5]), [0, 0])
        total[0] += r[5]
        total[1] += r[6]
    return {key: tuple(v) for key, v in summed.items() if v != [0, 0]}


@pytest.mark.parametrize("seed", range(8))
def test_each_store_writes_exactly_the_difference_of_two_recomputations(db, seed):
    """After every store, its deltas equal the day rows recomputed after it minus those before it:
    ties, duplicates within a batch and with stored rows, gaps at the timeout and a second over it,
    times rounding to midnight, several timeouts, and a day pruned halfway."""
    rng = random.Random(seed)
    timeout_us = rng.choice([900_000_000, 30_000_000, 60_000_000])
    offsets = (-3600, -900, -60, -30, -1e-6, -4e-7, 0, 4e-7, 6e-7, 30, 60, 900, 930, -1800, 1800, 7200.5)
    pruned = None
    for step in range(25):
        size = rng.choice([1, 1, 2, 3, 5, 8, 20, 60])
        batch = [
            {
                "user_id": rng.choice(["alice", "bob"]),
                "entity": rng.choice("abcd"),
                "time": MIDNIGHT + rng.choice(offsets) + rng.choice([0, 0, 0, 30, 60, 600, 900, 901]),
                "project": rng.choice(["web", "api", None]),
                "language": rng.choice(["Python", None]),
                "user_agent": rng.choice(["vim/9.0", "emacs/29.1", None]),
            }
            for _ in range(size)
        ]
        batch += rng.sample(batch, k=min(len(batch), 2)) if rng.random() < 0.3 else []
        rng.shuffle(batch)
        with db.begin() as conn:
            before = day_rows(conn, timeout_us)
        with db.begin() as conn:
            store_heartbeats(conn, validate_heartbeats(batch).accepted, timeout_us=timeout_us)
        with db.begin() as conn:
            after, got = day_rows(conn, timeout_us), take_deltas(conn)
        want = {}
        for key in (set(before) | set(after)) - {k for k in before if k[2] == pruned}:
            (us_after, n_after), (us_before, n_before) = after.get(key, (0, 0)), before.get(key, (0, 0))
            if (us_after - us_before, n_after - n_before) != (0, 0):
                want[key] = (us_after - us_before, n_after - n_before)
        assert got == want, (step, batch)  # (nothing for a pruned day: its rows stay as they are)
        if step == 12 and seed % 2:
            pruned = dt.date(2024, 3, 1)
            with db.begin() as conn:
                conn.execute(sa.text("UPDATE user_days SET pruned_at = now() WHERE day = :d"), {"d": pruned})
                conn.execute(
                    sa.text("DELETE FROM heartbeats WHERE time < :m"),
                    {"m": dt.datetime(2024, 3, 2, tzinfo=dt.UTC)},
                )
