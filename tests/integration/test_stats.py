"""WakaTime's stats from `hbw serve`: ranges on the user's calendar, sums of the day rows compared
with tests/reference.py computed from the raw stream."""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from jobs.user_agents import parse_user_agent
from tests.web_client import call, stored_stream
from worker.http.summaries import display


def test_stats_ranges_sum_the_reference(web, db, settings, broker):
    stream, expected, user_id, auth = stored_stream(db, broker, settings, seed=43, users=3, days=10)
    mine = {key: t for key, t in expected.activity_days.items() if key[0] == user_id}
    other = sum(
        t.seconds
        for (u, _, language), t in expected.languages.items()
        if u == user_id and language == "Other"
    )
    today = dt.datetime.now(dt.UTC).date()

    status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/all_time", headers=auth)
    assert status == 200
    data = body["data"]
    total = sum(t.seconds for t in mine.values())
    assert data["total_seconds_including_other_language"] == pytest.approx(total, abs=1e-6)
    assert data["total_seconds"] == pytest.approx(total - other, abs=1e-6)
    per_day = collections.defaultdict(float)
    for (_, day, *_), t in mine.items():
        per_day[day] += t.seconds
    best = max(per_day, key=per_day.__getitem__)
    assert (data["best_day"]["date"], data["best_day"]["total_seconds"]) == (
        str(best),
        pytest.approx(per_day[best]),
    )
    assert data["days_minus_holidays"] == sum(1 for s in per_day.values() if s > 0)
    assert data["is_including_today"] is True and data["status"] == "ok" and data["timezone"] == "UTC"
    languages = collections.defaultdict(float)
    for (u, _, language), t in expected.languages.items():
        if u == user_id:
            languages[language] += t.seconds
    assert {item["name"]: item["total_seconds"] for item in data["languages"]} == pytest.approx(
        dict(languages)
    )
    by_kind = collections.defaultdict(lambda: collections.defaultdict(float))
    for (_, _, category, machine), t in mine.items():
        by_kind["categories"][display("categories", category)] += t.seconds
        by_kind["machines"][display("machines", machine)] += t.seconds
    for (u, project), t in expected.projects.items():
        by_kind["projects"][project] += t.seconds if u == user_id else 0
    for (u, _, agent, _), t in expected.user_agent_days.items():
        parsed = parse_user_agent(agent)
        by_kind["editors"][display("editors", parsed.editor)] += t.seconds if u == user_id else 0
        by_kind["operating_systems"][display("operating_systems", parsed.os)] += (
            t.seconds if u == user_id else 0
        )
    for kind, want in by_kind.items():
        got = {item["name"]: item["total_seconds"] for item in data[kind]}
        assert got == pytest.approx({name: s for name, s in want.items() if s > 0}, abs=1e-6), kind

    status, body, _ = call(
        "GET", f"{web}/api/v1/users/current/stats", headers=auth
    )  # last_7_days, to yesterday
    week = {d for d in per_day if today - dt.timedelta(days=7) <= d < today}
    assert body["data"]["range"] == "last_7_days" and body["data"]["is_including_today"] is False
    assert body["data"]["total_seconds_including_other_language"] == pytest.approx(
        sum(per_day[d] for d in week)
    )
    month = f"{stream.first_day:%Y-%m}"
    status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/{month}", headers=auth)
    in_month = sum(s for d, s in per_day.items() if f"{d:%Y-%m}" == month)
    assert body["data"]["total_seconds_including_other_language"] == pytest.approx(in_month)
    status, body, _ = call("GET", f"{web}/api/v1/users/current/stats/forever", headers=auth)
    assert status == 400 and "unknown range" in body["error"]
    status, body, _ = call("GET", f"{web}/api/v1/users/current/all_time_since_today", headers=auth)
    assert status == 200 and body["data"]["total_seconds"] == pytest.approx(total, abs=1e-6)
    assert body["data"]["range"]["start_date"] == str(min(per_day)) and body["data"]["is_up_to_date"] is True
    project = max(
        (p for u, p in expected.projects if u == user_id),
        key=lambda p: expected.projects[(user_id, p)].seconds,
    )
    status, body, _ = call(
        "GET", f"{web}/api/v1/users/current/all_time_since_today?project={project}", headers=auth
    )
    assert body["data"]["total_seconds"] == pytest.approx(
        expected.projects[(user_id, project)].seconds, abs=1e-6
    )
    assert body["data"]["project"] == project
    status, body, _ = call(
        "GET", f"{web}/api/v1/users/current/all_time_since_today?project=nope", headers=auth
    )
    assert status == 404 and "no project" in body["error"]


def test_a_days_heartbeats_and_durations_add_up_to_its_day_rows(web, db, settings, broker):
    stream, expected, user_id, auth = stored_stream(db, broker, settings, seed=47, users=2, days=3)
    day = stream.first_day + dt.timedelta(days=1)
    status, body, _ = call("GET", f"{web}/api/v1/users/current/heartbeats?date={day}", headers=auth)
    want = sum(t.count for (u, d, *_), t in expected.activity_days.items() if u == user_id and d == day)
    assert status == 200 and len(body["data"]) == want and body["timezone"] == "UTC"
    assert [b["time"] for b in body["data"]] == sorted(b["time"] for b in body["data"])
    for slice_by in ("entity", "language", "project"):
        status, body, _ = call(
            "GET", f"{web}/api/v1/users/current/durations?date={day}&slice_by={slice_by}", headers=auth
        )
        per_project = collections.defaultdict(float)
        for run in body["data"]:
            if run["project"] is not None:
                per_project[run["project"]] += run["duration"]
        projects = {
            p: t.seconds for (u, d, p), t in expected.project_days.items() if u == user_id and d == day
        }
        assert dict(per_project) == pytest.approx(projects), slice_by
    status, body, _ = call("GET", f"{web}/api/v1/users/current/durations", headers=auth)
    assert status == 400 and "date" in body["error"]
