"""WakaTime's read API and the projects API over real HTTP, on a database populated through the
workers, every number compared with tests/reference.py computed from the raw stream."""

from __future__ import annotations

import collections
import math
import urllib.parse

import pytest
import sqlalchemy as sa

from jobs.keys import create_key
from jobs.user_agents import parse_user_agent
from tests import reference, streams
from tests.conftest import drain
from tests.web_client import basic, call
from worker.http.summaries import display
from worker.producer import enqueue_heartbeats


@pytest.fixture
def populated(db, settings, broker):
    """A stream stored by the workers; the user with the most projects, a key of theirs, and the
    reference computed from the raw stream."""
    stream = streams.generate(seed=23, users=5, days=3, invalid_share=0.0)
    enqueue_heartbeats(stream.items, batch_size=300, broker=broker)
    drain(settings)
    expected = reference.compute(stream.valid)
    per_user = collections.Counter(user_id for user_id, _ in expected.projects)
    user_id = max(sorted(per_user), key=per_user.__getitem__)
    assert per_user[user_id] >= 3
    with db.begin() as conn:
        key = create_key(conn, user_id)
    return stream, expected, user_id, basic(key)


def get(web: str, path: str, auth: dict, **params) -> tuple[int, dict]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    status, body, _ = call("GET", f"{web}{path}{query}", headers=auth)
    return status, body


def test_every_page_of_projects_is_the_reference_in_order(web, populated):
    _, expected, user_id, auth = populated
    mine = {name: totals for (user, name), totals in expected.projects.items() if user == user_id}
    want = sorted(mine, key=lambda name: (-mine[name].seconds_us, name))
    seen = []
    for page in range(1, 10):
        status, body = get(web, "/api/v2/projects", auth, page=page, limit=2)
        assert status == 200
        assert (body["total"], body["total_pages"]) == (len(mine), math.ceil(len(mine) / 2))
        seen += body["data"]
        if page >= body["total_pages"]:
            break
    assert [p["name"] for p in seen] == want
    for project in seen:
        assert project["total_seconds"] == pytest.approx(mine[project["name"]].seconds, abs=1e-6)
        assert project["heartbeat_count"] == mine[project["name"]].count
    status, body = get(web, "/api/v2/projects", auth, page=99, limit=2)
    assert (status, body["data"], body["total"]) == (200, [], len(mine))


def test_search_language_and_one_project_match_the_reference(web, populated):
    _, expected, user_id, auth = populated
    languages = {(project, language): totals for (user, project, language), totals in expected.languages.items()
                 if user == user_id}  # fmt: skip
    some_project, some_language = min(languages)
    status, body = get(web, "/api/v2/projects", auth, language=some_language.upper(), limit=100)
    assert status == 200
    assert sorted(p["name"] for p in body["data"]) == sorted(
        {p for p, lang in languages if lang == some_language}
    )
    part = some_project[1:4].upper()
    status, body = get(web, "/api/v2/projects", auth, search=part, sort="name", limit=100)
    names = [p["name"] for p in body["data"]]
    assert names == sorted({p for p, _ in languages if part.lower() in p.lower()})

    status, body = get(web, f"/api/v2/projects/{urllib.parse.quote(some_project, safe='')}", auth)
    assert status == 200 and body["data"]["name"] == some_project
    got = {lang["name"]: lang["total_seconds"] for lang in body["data"]["languages"]}
    want = {lang: totals.seconds for (p, lang), totals in languages.items() if p == some_project}
    assert got == pytest.approx(want, abs=1e-6)

    status, body = get(web, "/api/v2/languages", auth)
    per_language = collections.defaultdict(lambda: [0.0, 0])
    for (_, lang), totals in languages.items():
        per_language[lang][0] += totals.seconds
        per_language[lang][1] += 1
    assert {row["name"]: row["project_count"] for row in body["data"]} == {
        lang: count for lang, (_, count) in per_language.items()
    }
    got = {row["name"]: row["total_seconds"] for row in body["data"]}
    assert got == pytest.approx({lang: seconds for lang, (seconds, _) in per_language.items()}, abs=1e-6)


def test_editors_are_the_reference_with_their_projects(web, populated):
    _, expected, user_id, auth = populated
    seconds, projects = collections.defaultdict(float), collections.defaultdict(set)
    for (user, _, agent, project), totals in expected.user_agent_days.items():
        if user == user_id:
            editor = display("editors", parse_user_agent(agent).editor)
            seconds[editor] += totals.seconds
            projects[editor] |= {project} - {""}
    status, body = get(web, "/api/v2/editors", auth)
    assert status == 200 and body["total"] == len(seconds) >= 2
    assert {e["name"]: e["project_count"] for e in body["data"]} == {e: len(p) for e, p in projects.items()}
    assert {e["name"]: e["total_seconds"] for e in body["data"]} == pytest.approx(dict(seconds), abs=1e-6)


def test_patch_sets_metadata_and_aliases_in_one_go(web, populated):
    stream, _, user_id, auth = populated
    status, body = get(web, "/api/v2/projects", auth, limit=100)
    big, small, *_ = [p["name"] for p in body["data"]]
    url = f"{web}/api/v2/projects/{urllib.parse.quote(big, safe='')}"
    change = {"display_name": "Big", "color": "#ABCDEF", "is_archived": True, "aliases": [small]}
    status, answer, _ = call("PATCH", url, change, auth)
    assert status == 200, answer
    data = answer["data"]
    assert (data["display_name"], data["color"], data["is_archived"], data["aliases"]) == (
        "Big",
        "#abcdef",
        True,
        [small],
    )
    expected = reference.compute(stream.valid, aliases={(user_id, small): big})
    assert data["total_seconds"] == pytest.approx(expected.projects[(user_id, big)].seconds, abs=1e-6)
    status, body = get(web, "/api/v2/projects", auth, limit=100)
    assert big not in [p["name"] for p in body["data"]]  # archived
    assert small not in [p["name"] for p in body["data"]]  # an alias now
    status, body = get(web, "/api/v2/projects", auth, limit=100, include_archived="true")
    assert big in [p["name"] for p in body["data"]]
    status, body = get(web, f"/api/v2/projects/{urllib.parse.quote(small, safe='')}", auth)
    assert (status, body["data"]["name"]) == (200, big)  # an alias names its project

    refused = [
        ({"aliases": [big]}, 409, "itself"),
        ({"color": "blue"}, 400, "color"),
        ({"owner": "x"}, 400, "unknown field"),
    ]
    for body_, status_, words in refused:
        status, answer, _ = call("PATCH", url, body_, auth)
        assert (status, words in answer["error"]) == (status_, True), answer
    status, answer, _ = call("PATCH", f"{web}/api/v2/projects/no-such-project", {"color": "#000000"}, auth)
    assert status == 404 and "no project" in answer["error"]
    status, answer, _ = call("PATCH", url, {"aliases": []}, auth)
    assert (status, answer["data"]["aliases"]) == (200, [])
    back = reference.compute(stream.valid)
    assert answer["data"]["total_seconds"] == pytest.approx(back.projects[(user_id, big)].seconds, abs=1e-6)


def test_wakatime_v1_reads_and_their_compat_mirror(web, populated):
    stream, expected, user_id, auth = populated
    for prefix in ("/api/v1", "/api/compat/wakatime/v1"):
        status, body = get(web, f"{prefix}/users/current", auth)
        assert status == 200 and body["data"]["id"] == user_id and body["data"]["timezone"] == "UTC"
        last = max((item for item in stream.valid if item["user_id"] == user_id), key=lambda i: i["time"])
        assert body["data"]["last_project"] == last.get("project")

        status, body = get(web, f"{prefix}/users/{user_id}/projects", auth, q="")
        mine = sorted(name for user, name in expected.projects if user == user_id)
        assert status == 200 and [p["name"] for p in body["data"]] == mine
        assert all(p["urlencoded_name"] == urllib.parse.quote(p["name"], safe="") for p in body["data"])

        status, body = get(web, f"{prefix}/users/current/user_agents", auth)
        agents = {agent for user, agent in expected.user_agents if user == user_id}
        assert status == 200 and {a["value"] for a in body["data"]} == agents

        assert get(web, f"{prefix}/users/current/goals", auth) == (
            200,
            {"data": [], "total": 0, "total_pages": 0},
        )
        status, body, _ = call("POST", f"{web}{prefix}/users/current/file_experts", {"entity": "x"}, auth)
        assert (status, body) == (200, {"data": []})
        status, body, _ = call("POST", f"{web}{prefix}/users/current/plugins/errors", {"error": "x"}, auth)
        assert status == 201


def test_errors_are_json_and_nobody_reads_another_user(web, populated):
    _, _, _, auth = populated
    status, body = get(web, "/api/v1/users/someone-else/projects", auth)
    assert status == 403 and "own user" in body["error"]
    status, body = get(web, "/api/v1/users/current/projects", {})
    assert status == 401 and "error" in body
    status, body = get(web, "/api/v1/no/such/route", auth)
    assert (status, body) == (404, {"error": "Not Found"})
    status, body, _ = call("DELETE", f"{web}/api/v2/projects", headers=auth)
    assert (status, body) == (405, {"error": "Method Not Allowed"})
    for params, words in (({"limit": 0}, "limit"), ({"sort": "color"}, "sort"), ({"page": "x"}, "page")):
        status, body = get(web, "/api/v2/projects", auth, **params)
        assert status == 400 and words in body["error"]


def test_a_time_zone_set_through_the_api_moves_the_history(web, populated, db, settings):
    stream, _, user_id, auth = populated
    url = f"{web}/api/v1/users/current"
    status, body, _ = call("PATCH", url, {"timezone": "Asia/Kolkata"}, auth)
    assert (status, body["data"]["timezone"], body["data"]["is_up_to_date"]) == (202, "Asia/Kolkata", False)
    drain(settings)
    assert get(web, "/api/v1/users/current", auth)[1]["data"]["is_up_to_date"] is True
    expected = reference.compute(stream.valid, zones={user_id: "Asia/Kolkata"})
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT day, project, coding_us FROM project_days WHERE user_id = :u"),
                            {"u": user_id}).all()  # fmt: skip
    want = {(d, p): t.seconds_us for (u, d, p), t in expected.project_days.items() if u == user_id}
    assert {(d, p): us for d, p, us in rows} == want
    assert call("PATCH", url, {"timezone": "Asia/Kolkata"}, auth)[0] == 200  # unchanged
    status, body, _ = call("PATCH", url, {"timezone": "Nowhere/Land"}, auth)
    assert status == 400 and "not a time zone" in body["error"]
    assert call("PATCH", url, {"email": "x@y"}, auth)[0] == 400


def test_the_timezone_header_sets_the_zone_of_a_user_without_one(web, db, settings):
    with db.begin() as conn:
        auth = basic(create_key(conn, "carol"))
    late_evening = 1_718_071_200.0  # 2024-06-11 02:00 UTC: still June 10 in New York, not in Kolkata
    beats = [
        {"entity": "a.py", "type": "file", "time": late_evening + 60 * i, "project": "p"} for i in range(3)
    ]
    headers = {**auth, "Timezone": "America/New_York"}
    assert call("POST", f"{web}/api/v1/users/current/heartbeats.bulk", beats, headers)[0] == 201
    later = [{**beats[0], "time": late_evening + 3600}]
    headers = {**auth, "Timezone": "Asia/Kolkata"}  # the laptop travelled: the user's zone stays
    assert call("POST", f"{web}/api/v1/users/current/heartbeats.bulk", later, headers)[0] == 201
    drain(settings)
    assert get(web, "/api/v1/users/current", auth)[1]["data"]["timezone"] == "America/New_York"
    with db.connect() as conn:
        days = conn.execute(sa.text("SELECT day FROM project_days WHERE user_id = 'carol'")).scalars().all()
    assert [str(day) for day in days] == ["2024-06-10"]


@pytest.mark.parametrize("web", [{"http_rate_limit_per_minute": 3}], indirect=True)
def test_reads_share_the_keys_rate_limit(web, db):
    with db.begin() as conn:
        auth = basic(create_key(conn, "erin"))
    answers = [get(web, path, auth)[0] for path in ("/api/v1/users/current", "/api/v2/projects",
                                                    "/api/v1/users/current/goals", "/api/v1/users/current/stats")]  # fmt: skip
    assert answers == [200, 200, 200, 429]


def test_a_read_survives_postgresql_closing_its_connections(web, db, key):
    """Reads do not ping a connection before using it: one PostgreSQL closed (a restart, a
    failover) fails the read, which runs again on a fresh connection."""
    auth, path = basic(key), "/api/v1/users/current/statusbar/today"
    assert get(web, path, auth)[0] == 200
    with db.connect() as conn:
        closed = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'hbw-reads'"
        )).scalar_one()  # fmt: skip
    assert closed >= 1
    for _ in range(3):
        status, body = get(web, path, auth)
        assert status == 200 and body["data"]["grand_total"]["total_seconds"] == 0
