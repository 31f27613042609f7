"""The read API on users' own calendars around midnight and daylight-saving changes, in a zone with
a half-hour offset (Australia/Adelaide: +9:30, +10:30 in summer) and one whose clock goes back over
midnight (America/Havana): summaries and stats equal tests/reference.py day by day."""

from __future__ import annotations

import collections
import datetime as dt
import random

import pytest

from jobs.keys import create_key
from jobs.users import set_time_zone
from tests import reference
from tests.conftest import drain
from tests.integration.test_zones import CHANGES, beats_across_midnights
from tests.web_client import basic, call
from worker.producer import enqueue_heartbeats


@pytest.mark.parametrize("zone", ["Australia/Adelaide", "America/Havana"])
def test_summaries_and_stats_on_the_users_calendar(web, db, settings, broker, zone):
    rng = random.Random(13)
    items = beats_across_midnights(rng, "gil")
    with db.begin() as conn:
        auth = basic(create_key(conn, "gil"))
        set_time_zone(conn, "gil", zone)
    enqueue_heartbeats(items, batch_size=150, broker=broker)
    drain(settings)
    expected = reference.compute(items, zones={"gil": zone})
    per_day = collections.defaultdict(float)
    for (_, day, *_), totals in expected.activity_days.items():
        per_day[day] += totals.seconds
    for change in CHANGES:
        since, until = change - dt.timedelta(days=2), change + dt.timedelta(days=2)
        status, body, _ = call(
            "GET", f"{web}/api/v1/users/current/summaries?start={since}&end={until}", headers=auth
        )
        assert status == 200
        got = {summary["range"]["date"]: summary["grand_total"]["total_seconds"] for summary in body["data"]}
        want = {
            str(since + dt.timedelta(days=n)): per_day.get(since + dt.timedelta(days=n), 0.0)
            for n in range(5)
        }
        assert got == pytest.approx(want, abs=1e-6), change
        assert {summary["range"]["timezone"] for summary in body["data"]} == {zone}
    month = f"{CHANGES[0]:%Y-%m}"
    status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/{month}", headers=auth)
    in_month = sum(seconds for day, seconds in per_day.items() if f"{day:%Y-%m}" == month)
    assert body["data"]["total_seconds_including_other_language"] == pytest.approx(in_month, abs=1e-6)
