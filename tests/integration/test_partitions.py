"""Raw heartbeats partitioned by UTC month (issue #19, item 4): months made ahead and on demand,
`hbw prune` dropping whole months, and `hbw db migrate` moving an older, unpartitioned table into
partitions while a worker stores, interrupted and resumed."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from db import partitions as db_partitions
from db.engine import create_engine
from db.schema import apply_schema
from jobs.heartbeat import validate_heartbeats
from jobs.migrate import migrate_heartbeats
from jobs.retention import droppable, prune_before
from jobs.store import store_heartbeats
from tests import reference, streams
from tests.conftest import drain, scratch_database, worker_process
from tests.integration.test_cli import hbw
from tests.old_schemas import SCHEMA_12_HEARTBEATS
from tests.tables import diff, snapshot
from worker.producer import enqueue_heartbeats

pytestmark = pytest.mark.partitions


def with_history(stream: streams.Stream, *shifts: int) -> list[dict]:
    """The stream's heartbeats, and the same again `shift` days earlier for each shift: months of history."""
    return [{**hb, "time": hb["time"] - shift * 86_400} for shift in (0, *shifts) for hb in stream.valid]


def derived(snap: dict) -> dict:
    """Everything but the raw rows."""
    return {table: rows for table, rows in snap.items() if table not in ("heartbeats", "heartbeat_rows")}


def month(epoch: float) -> dt.date:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).date().replace(day=1)


def partition_months(engine: sa.Engine) -> set[dt.date]:
    with engine.connect() as conn:
        return {lower.astimezone(dt.UTC).date() for _, lower, _ in db_partitions.select_partitions(conn)}


def test_months_are_made_ahead_and_on_demand(db):
    today = dt.datetime.now(dt.UTC).date()
    ahead = {(today.replace(day=1) + dt.timedelta(days=31 * n)).replace(day=1) for n in range(3)}
    assert ahead <= partition_months(db)
    old = dt.datetime(2019, 3, 5, 12, tzinfo=dt.UTC).timestamp()
    items = [{"user_id": "u", "entity": "a.py", "time": old + i * 60} for i in range(3)]
    with db.begin() as conn:
        assert (
            store_heartbeats(conn, validate_heartbeats(items).accepted, timeout_us=900_000_000).inserted == 3
        )
        where = (
            conn.execute(sa.text("SELECT DISTINCT tableoid::regclass::text FROM heartbeats")).scalars().all()
        )
    assert where == ["heartbeats_y2019m03"]
    assert dt.date(2019, 3, 1) in partition_months(db)


def test_prune_drops_whole_months_and_keeps_every_total(db, settings, broker, capsys):
    stream = streams.generate(seed=43, users=4, days=3, invalid_share=0.0)
    valid = with_history(stream, 40, 80)
    enqueue_heartbeats(valid, batch_size=200, broker=broker)
    drain(settings)
    expected = reference.compute(valid)
    assert diff(expected, snapshot(db)) == []
    before = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=20)
    with db.connect() as conn:
        dropping = droppable(db_partitions.select_partitions(conn), before)
        kept_rows = conn.execute(
            sa.text("SELECT count(*) FROM heartbeats WHERE hbw_day(user_id, time) >= :d"), {"d": before}
        ).scalar_one()
    assert {month(hb["time"]) for hb in valid} & {lower.date() for _, lower, _ in dropping}
    totals = snapshot(db)

    pruned = prune_before(db, before)
    assert sorted(pruned.months) == sorted(name for name, _, _ in dropping)
    assert not {name for name, _, _ in dropping} & {
        n for n, _, _ in db_partitions.select_partitions(db.connect())
    }
    with db.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FILTER (WHERE hbw_day(user_id, time) < :d), count(*) "
                                    "FROM heartbeats"), {"d": before}).one()  # fmt: skip
    assert tuple(left) == (0, kept_rows)  # the pruned days' raw rows are gone, the others kept
    assert pruned.heartbeats == totals["heartbeat_rows"] - kept_rows  # those in dropped months counted
    assert derived(snapshot(db)) == derived(totals)
    # A late heartbeat of a dropped month: stored in the month made again (the worker's memory of
    # the months costs it one retry), but its day is pruned: no total changes.
    late = {**valid[-1], "time": valid[-1]["time"] - 0.5}
    enqueue_heartbeats([late], batch_size=1, broker=broker)
    drain(settings)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM heartbeats WHERE time < :t"),
                            {"t": dropping[-1][2]}).scalar_one() == 1  # fmt: skip
    assert derived(snapshot(db)) == derived(totals)


def test_migrate_partitions_an_older_table_beside_a_live_worker_and_resumes(settings, broker, server_urls):
    stream = streams.generate(seed=47, users=5, days=3, invalid_share=0.0)
    valid = with_history(stream, 45)
    first, second = valid[: len(valid) // 2], valid[len(valid) // 2 :]
    with scratch_database(server_urls.database, "hbw_migrate") as url:
        engine = create_engine(url, pool_size=2)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(SCHEMA_12_HEARTBEATS))
                apply_schema(conn)
                assert not db_partitions.is_partitioned(conn)
            enqueue_heartbeats(first, batch_size=100, broker=broker)
            drained = hbw("worker", "--burst", "-p", "1", env={"DATABASE_URL": url})
            assert drained.returncode == 0, drained.stderr.decode()[-3000:]

            assert migrate_heartbeats(engine, chunk_size=100, stop_after_chunks=2) is None  # interrupted
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT copied FROM hbw_migration")).scalar_one() == 200
            with worker_process(url):  # the rest is stored while the migration goes on
                enqueue_heartbeats(second, batch_size=20, broker=broker)
                migrated = hbw("db", "migrate", "--chunk-size", "100", env={"DATABASE_URL": url})
                assert migrated.returncode == 0, migrated.stderr.decode()[-3000:]
                assert b"partitioned:" in migrated.stdout
            drained = hbw("worker", "--burst", "-p", "1", env={"DATABASE_URL": url})
            assert drained.returncode == 0, drained.stderr.decode()[-3000:]

            with engine.connect() as conn:
                assert db_partitions.is_partitioned(conn)
                assert (
                    conn.execute(sa.text("SELECT to_regclass('heartbeats_unpartitioned')")).scalar() is None
                )
            assert {month(hb["time"]) for hb in valid} <= partition_months(engine)
            assert diff(reference.compute(valid), snapshot(engine)) == []
            verified = hbw("verify", env={"DATABASE_URL": url})
            assert verified.returncode == 0, verified.stdout.decode()[-2000:]
            again = hbw("db", "migrate", env={"DATABASE_URL": url})
            assert again.returncode == 0 and b"nothing to do" in again.stdout
        finally:
            engine.dispose()
