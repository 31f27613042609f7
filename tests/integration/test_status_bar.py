"""The status bar of today (wakatime-cli --today, editor plugins) from `hbw serve`, in the user's
time zone, every number compared with tests/reference.py computed from what was sent."""

from __future__ import annotations

import collections
import datetime as dt
import random
import time

import pytest

from jobs.keys import create_key
from jobs.user_agents import parse_user_agent
from jobs.users import set_time_zone
from tests import reference
from tests.conftest import drain
from tests.web_client import basic, call, stored_stream
from worker.http.summaries import display

UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"
ZONE = "Asia/Kolkata"


def beats(rng: random.Random, now: float) -> list[dict]:
    """Two hours up to a minute ago: projects, none, two categories, languages."""
    t, items = now - 2 * 3600, []
    while t < now - 60:
        t += rng.choice([20, 60, 120, 600])
        item = {"entity": f"/src/{rng.randint(1, 5)}.py", "type": "file", "time": round(t, 3),
                "category": rng.choice(["coding", "coding", "debugging"]),
                "project": rng.choice(["web", "api", None]), "language": rng.choice(["Python", "Go", None])}  # fmt: skip
        items.append({k: v for k, v in item.items() if v is not None})
    return items


def test_the_status_bar_is_today_in_the_users_zone(web, db, settings):
    with db.begin() as conn:
        auth = basic(create_key(conn, "dana"))
        assert set_time_zone(conn, "dana", ZONE) == []  # (no history yet)
    rng = random.Random(3)
    items = beats(rng, time.time())
    half = len(items) // 2
    bulk = f"{web}/api/v1/users/current/heartbeats.bulk"
    assert call("POST", bulk, items[:half], {**auth, "User-Agent": UA, "X-Machine-Name": "laptop"})[0] == 201
    assert call("POST", bulk, items[half:], {**auth, "User-Agent": UA})[0] == 201  # no machine
    drain(settings)

    status, body, _ = call("GET", f"{web}/api/v1/users/current/statusbar/today", headers=auth)
    assert status == 200 and body["has_team_features"] is False
    data = body["data"]
    sent = [{**item, "user_id": "dana", "user_agent": UA} for item in items]
    for item in sent[:half]:
        item["machine"] = "laptop"
    expected = reference.compute(sent, zones={"dana": ZONE})
    today = data["range"]["date"]
    assert data["range"]["timezone"] == ZONE and data["range"]["text"] == "Today"
    rows = {key: t for key, t in expected.activity_days.items() if str(key[1]) == today}
    assert data["grand_total"]["total_seconds"] == pytest.approx(
        sum(t.seconds for t in rows.values()), abs=1e-6
    )

    def by(index: int, kind: str) -> dict[str, float]:
        sums = collections.defaultdict(float)
        for key, totals in rows.items():
            sums[display(kind, key[index])] += totals.seconds
        return dict(sums)

    assert {c["name"]: c["total_seconds"] for c in data["categories"]} == pytest.approx(by(2, "categories"))
    assert {m["name"]: m["total_seconds"] for m in data["machines"]} == pytest.approx(by(3, "machines"))
    projects = {p: t.seconds for (_, day, p), t in expected.project_days.items() if str(day) == today}
    assert {p["name"]: p["total_seconds"] for p in data["projects"]} == pytest.approx(projects)
    assert [e["name"] for e in data["editors"]] == ["VS Code"]
    assert [o["name"] for o in data["operating_systems"]] == ["Linux"]
    for item in data["categories"] + data["projects"] + data["languages"]:
        assert all(type(item[k]) is int for k in ("hours", "minutes", "seconds"))
        assert all(type(item[k]) is str for k in ("text", "digital", "decimal"))
    assert sum(c["percent"] for c in data["categories"]) == pytest.approx(100, abs=0.05)

    status, other, _ = call(
        "GET", f"{web}/api/compat/wakatime/v1/users/current/status_bar/today", headers=auth
    )
    assert status == 200 and other["data"] == data

    status, machines, _ = call("GET", f"{web}/api/v1/users/current/machine_names", headers=auth)
    assert status == 200 and [m["value"] for m in machines["data"]] == ["laptop"]
    status, editors, _ = call("GET", f"{web}/api/v2/editors", headers=auth)
    assert [(e["name"], e["user_agent_count"], e["project_count"]) for e in editors["data"]] == [
        ("VS Code", 1, len({p for (u, _, _, p) in expected.user_agent_days if u == "dana" and p}))
    ]
    agent_seconds = sum(t.seconds for (u, _), t in expected.user_agents.items() if u == "dana")
    assert editors["data"][0]["total_seconds"] == pytest.approx(agent_seconds, abs=1e-6)


def test_summaries_of_a_range_are_the_reference_day_by_day(web, db, settings, broker):
    stream, expected, user_id, auth = stored_stream(
        db, broker, settings, seed=41, users=3, days=4, zone="America/New_York"
    )
    since, until = stream.first_day - dt.timedelta(days=1), stream.last_day + dt.timedelta(days=1)
    url = f"{web}/api/v1/users/current/summaries?start={since}&end={until}&branches="
    status, body, _ = call("GET", url, headers=auth)
    assert status == 200
    days = [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]
    assert [d["range"]["date"] for d in body["data"]] == [str(day) for day in days]
    for day, summary in zip(days, body["data"], strict=True):
        want = sum(t.seconds for (u, d, *_), t in expected.activity_days.items() if u == user_id and d == day)
        assert summary["grand_total"]["total_seconds"] == pytest.approx(want, abs=1e-6)
        projects = {
            p: t.seconds for (u, d, p), t in expected.project_days.items() if u == user_id and d == day
        }
        assert {p["name"]: p["total_seconds"] for p in summary["projects"]} == pytest.approx(projects)
    total = sum(t.seconds for (u, *_), t in expected.activity_days.items() if u == user_id)
    assert body["cumulative_total"]["seconds"] == pytest.approx(total, abs=1e-6)
    assert body["daily_average"]["holidays"] >= 2  # the day before and the day after

    project = max(
        (p for (u, p) in expected.projects if u == user_id),
        key=lambda p: expected.projects[(user_id, p)].seconds,
    )
    status, body, _ = call("GET", f"{url}&project={project}", headers=auth)
    assert body["cumulative_total"]["seconds"] == pytest.approx(expected.projects[(user_id, project)].seconds)
    editors = collections.defaultdict(float)  # the project's editors, from the user agents' day rows
    for (u, _, agent, p), t in expected.user_agent_days.items():
        if (u, p) == (user_id, project):
            editors[display("editors", parse_user_agent(agent).editor)] += t.seconds
    got = collections.defaultdict(float)
    for summary in body["data"]:
        for editor in summary["editors"]:
            got[editor["name"]] += editor["total_seconds"]
    assert dict(got) == pytest.approx(dict(editors), abs=1e-5) and len(editors) >= 1

    status, body, _ = call(
        "GET", f"{web}/api/v1/users/current/summaries?range=Last 7 Days".replace(" ", "%20"), headers=auth
    )
    assert status == 200 and len(body["data"]) == 7
    for query, words in (("start=2024-01-02&end=2024-01-01", "before start"), ("start=x&end=y", "YYYY-MM-DD"),
                         ("range=fortnight", "unknown range"), (f"start={since}&end={until}&timezone=UTC", "time zone")):  # fmt: skip
        status, body, _ = call("GET", f"{web}/api/v1/users/current/summaries?{query}", headers=auth)
        assert status == 400 and words in body["error"], body
