"""`hbw serve` reading from a streaming replica (DATABASE_READ_URL) while workers and writes use
the primary (issue #19, item 3): a private primary and replica, started here."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from db.schema import apply_schema
from jobs.keys import create_key
from tests import reference, streams
from tests.integration.test_cli import hbw
from tests.replica import primary_and_replica, wait_replayed
from tests.web_client import basic, call, serve
from worker.http.app import create_app
from worker.producer import enqueue_heartbeats

pytestmark = pytest.mark.slow


def test_reads_come_from_the_replica_and_writes_go_to_the_primary(settings, broker):
    with primary_and_replica() as (primary_url, replica_url):
        primary, replica = create_engine(primary_url, pool_size=2), create_engine(replica_url, pool_size=2)
        with primary.begin() as conn:
            apply_schema(conn)
        split = settings.model_copy(update={"database_url": primary_url, "database_read_url": replica_url})
        stream = streams.generate(seed=7, users=3, days=2, invalid_share=0.0)
        enqueue_heartbeats(stream.items, batch_size=200, broker=broker)
        drained = hbw("worker", "--burst", "-p", "1", env={"DATABASE_URL": primary_url})
        assert drained.returncode == 0, drained.stderr.decode()[-3000:]
        expected = reference.compute(stream.valid)
        user_id, project = max(expected.projects, key=lambda key: expected.projects[key].seconds)
        with primary.begin() as conn:
            auth = basic(create_key(conn, user_id))
        wait_replayed(primary, replica)
        for web in serve(create_app(split, broker=broker), split):
            status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/all_time", headers=auth)
            total = sum(t.seconds for (u, *_), t in expected.activity_days.items() if u == user_id)
            assert status == 200
            assert body["data"]["total_seconds_including_other_language"] == pytest.approx(total, abs=1e-6)
            with replica.connect() as conn:  # the reads' connections are the replica's
                readers = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hbw-reads'"
                assert conn.execute(sa.text(readers)).scalar_one() >= 1
            with primary.connect() as conn:
                assert conn.execute(sa.text(readers)).scalar_one() == 0

            # a write goes to the primary (the replica would refuse it), and reaches the reads
            url = f"{web}/api/v2/projects/{project}"
            status, answer, _ = call("PATCH", url, {"display_name": "Renamed"}, auth)
            assert (status, answer["data"]["display_name"]) == (200, "Renamed"), answer
            wait_replayed(primary, replica)
            status, answer, _ = call("GET", url, headers=auth)
            assert (status, answer["data"]["display_name"]) == (200, "Renamed")
        primary.dispose()
        replica.dispose()
