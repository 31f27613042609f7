"""Per-user time zones (docs/spec.md, section 3): a user's days are the calendar days of their zone,
around midnight and across daylight-saving changes, in zones with half-hour and 45-minute offsets,
in the live path and in a full recomputation, equal to tests/reference.py."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from jobs.recompute import recompute
from tests import reference
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats

UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"
#: Zones with an odd offset or a daylight-saving change; Havana and Santiago change at midnight.
ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "America/New_York",
         "America/Havana", "America/Santiago"]  # fmt: skip
#: Days with a daylight-saving change in one of them (2024), and a plain one.
CHANGES = [dt.date(2024, 3, 10), dt.date(2024, 3, 17), dt.date(2024, 4, 7), dt.date(2024, 9, 8),
           dt.date(2024, 10, 6), dt.date(2024, 11, 3), dt.date(2024, 6, 12)]  # fmt: skip


def test_day_boundaries_agree_with_zoneinfo_and_partition_time(engine):
    """Every instant belongs to the local day zoneinfo says, between that day's start and the next."""
    instants = [
        dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(minutes=minutes)
        for day in CHANGES
        for minutes in range(-36 * 60, 36 * 60, 17)
    ]
    with engine.connect() as conn:
        for zone in ZONES:
            rows = conn.execute(
                sa.text("""
                    SELECT t, d, hbw_zone_day_start(:zone, d) <= t AND t < hbw_zone_day_start(:zone, d + 1)
                    FROM (SELECT t, hbw_zone_day(:zone, t) AS d FROM unnest(CAST(:ts AS timestamptz[])) AS t) s
                """),
                {"zone": zone, "ts": instants},
            ).all()
            assert all(inside for _, _, inside in rows), zone
            assert [d for _, d, _ in rows] == [t.astimezone(ZoneInfo(zone)).date() for t in instants], zone


def beats_across_midnights(rng: random.Random, user_id: str) -> list[dict]:
    """Sessions of heartbeats 10 s - 20 min apart over every local midnight and change of CHANGES."""
    items = []
    for day in CHANGES:
        t = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() - 30 * 3600
        end = t + 60 * 3600
        while t < end:
            t += rng.choice([10, 45, 300, 600, 1200, 3600 * 3])
            items.append({"user_id": user_id, "entity": f"/src/{rng.randint(1, 9)}.py", "type": "file",
                          "time": round(t, 3), "project": rng.choice(["web", "api", None]),
                          "language": rng.choice(["Python", "Go", None]), "user_agent": UA})  # fmt: skip
    return items


def project_days(engine) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT user_id, day, project, coding_us, heartbeat_count FROM project_days")
        )
        return {(u, d, p): (us, n) for u, d, p, us, n in rows}


def test_each_user_counts_in_their_zone_live_and_recomputed(db, settings, broker):
    rng = random.Random(5)
    zones = {f"user-{i}": zone for i, zone in enumerate(ZONES)}
    with db.begin() as conn:
        for user_id, zone in zones.items():
            conn.execute(
                sa.text("INSERT INTO users (user_id, timezone) VALUES (:u, :z)"), {"u": user_id, "z": zone}
            )
    items = [item for user_id in zones for item in beats_across_midnights(rng, user_id)]
    rng.shuffle(items)
    for start in range(0, len(items), 500):
        enqueue_heartbeats(items[start : start + 500], batch_size=rng.randint(1, 200), broker=broker)
    drain(settings)

    expected = reference.compute(items, zones=zones)
    assert diff(expected, snapshot(db)) == []
    want = {key: (t.seconds_us, t.count) for key, t in expected.project_days.items()}
    assert project_days(db) == want
    utc = reference.compute(items)  # the zones make a difference the test can see
    assert {key: (t.seconds_us, t.count) for key, t in utc.project_days.items()} != want

    with db.begin() as conn:  # a full recomputation of every user-day gives the same rows
        keys = [tuple(row) for row in conn.execute(sa.text("SELECT user_id, day FROM user_days"))]
        conn.execute(sa.text("TRUNCATE project_days, language_days, user_agent_days"))
        conn.execute(
            sa.text(
                "INSERT INTO stale_days (user_id, day, full_refresh) SELECT user_id, day, true FROM user_days ON CONFLICT DO NOTHING"
            )
        )
        recompute(conn, keys, timeout_us=settings.timeout_us)
    assert project_days(db) == want
    assert diff(expected, snapshot(db)) == []


def test_a_new_time_zone_moves_the_whole_history_while_heartbeats_keep_coming(db, settings, broker, capsys):
    rng = random.Random(8)
    items = beats_across_midnights(rng, "ada") + beats_across_midnights(rng, "bob")
    rng.shuffle(items)
    early, late = items[: len(items) // 2], items[len(items) // 2 :]
    enqueue_heartbeats(early, batch_size=100, broker=broker)
    drain(settings)
    assert diff(reference.compute(early), snapshot(db)) == []

    assert cli.main(["user", "set", "ada", "--timezone", "Australia/Adelaide"]) == 0
    assert "handed to the workers" in capsys.readouterr().out
    enqueue_heartbeats(late, batch_size=100, broker=broker)  # stored while her history is recomputed
    drain(settings)
    zones = {"ada": "Australia/Adelaide"}
    expected = reference.compute(items, zones=zones)
    assert diff(expected, snapshot(db)) == []
    assert project_days(db) == {key: (t.seconds_us, t.count) for key, t in expected.project_days.items()}
    assert cli.main(["user", "show", "ada"]) == 0 and "Australia/Adelaide" in capsys.readouterr().out

    assert cli.main(["user", "set", "ada", "--timezone", "Australia/Adelaide"]) == 0
    assert "unchanged" in capsys.readouterr().out
    for zone in ("EST", "Mars/Olympus_Mons", "UTC+3", ""):
        assert cli.main(["user", "set", "ada", "--timezone", zone]) == 2
        assert "not a time zone" in capsys.readouterr().err
    assert cli.main(["prune", "--before", str(CHANGES[1])]) == 0
    assert cli.main(["user", "set", "bob", "--timezone", "Asia/Kolkata"]) == 2
    assert "pruned day(s)" in capsys.readouterr().err
