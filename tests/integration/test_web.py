"""`hbw serve` over real HTTP: WakaTime's endpoints, what ends up in the tables, and Redis or
PostgreSQL being down. Authentication is in test_web_auth.py, the connection limits in
test_web_limits.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from tests.conftest import drain, free_port
from tests.web_client import BULK, basic, post, serve
from worker.http.app import create_app
from worker.runtime.broker import make_broker

UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"


def cli_heartbeat(t: float, entity: str, language: str = "Python", **extra) -> dict:
    """A heartbeat as wakatime-cli serialises it (its field names, nulls included)."""
    return {"entity": entity, "type": "file", "category": "coding", "time": t, "project": "hbw",
            "project_root_count": 4, "branch": "main", "language": language, "dependencies": ["os"],
            "lines": 120, "line_additions": None, "line_deletions": None, "lineno": 7, "cursorpos": 42,
            "is_write": True, "user_agent": UA, **extra}  # fmt: skip


def test_a_wakatime_cli_bulk_post_ends_up_in_every_table(web, key, db, broker, settings):
    t0 = time.time() - 3600
    body = [
        cli_heartbeat(t0, "/src/app.py"),
        cli_heartbeat(t0 + 60, "/src/app.py"),
        cli_heartbeat(t0 + 90, "/src/main.go", "Go"),
        {"type": "file", "time": t0 + 100},  # no entity
        cli_heartbeat(t0 + 120, "/src/main.go", "Go"),
    ]
    headers = {**basic(key), "User-Agent": UA, "X-Machine-Name": "laptop"}
    status, answer, _ = post(f"{web}/api/v1/users/current/heartbeats.bulk", body, headers)
    assert status == 201
    statuses = [s for _, s in answer["responses"]]
    assert statuses == [201, 201, 201, 400, 201]
    assert "entity" in answer["responses"][3][0]["error"]
    assert answer["responses"][0][0]["data"]["entity"] == "/src/app.py"

    drain(settings)
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, machine FROM heartbeats")).all()
        assert sorted(rows) == [("alice", "laptop")] * 4
        project = conn.execute(sa.text("SELECT total_seconds, heartbeat_count FROM projects "
                                       "WHERE user_id = 'alice' AND name = 'hbw'")).one()  # fmt: skip
        assert project.heartbeat_count == 4 and project.total_seconds == pytest.approx(120, abs=0.01)
        languages = dict(conn.execute(sa.text("SELECT language, total_seconds FROM project_languages "
                                              "WHERE user_id = 'alice'")).all())  # fmt: skip
        assert languages == pytest.approx({"Python": 90, "Go": 30}, abs=0.01)
        agent = conn.execute(sa.text("SELECT editor, editor_version, plugin, cli_version, os, total_seconds "
                                     "FROM user_agents WHERE user_id = 'alice'")).one()  # fmt: skip
        assert tuple(agent)[:5] == ("vscode", "1.85.1", "vscode-wakatime", "1.90.0", "linux")
        assert agent.total_seconds == pytest.approx(120, abs=0.01)


def test_one_heartbeat_with_the_key_in_the_query_and_the_agent_from_the_header(
    web, key, db, broker, settings
):
    heartbeat = {"entity": "notes.md", "time": time.time() - 60, "project": "docs", "user_id": "mallory"}
    url = f"{web}/api/v1/users/current/heartbeats?api_key={key.removeprefix('waka_').upper()}"
    status, answer, _ = post(url, heartbeat, {"User-Agent": UA})
    assert status == 201
    assert answer["data"]["entity"] == "notes.md" and answer["data"]["user_agent"] == UA
    assert "user_id" not in answer["data"]

    status, answer, _ = post(url, {"entity": "x", "time": "yesterday"})
    assert status == 400 and "time" in answer["error"]

    drain(settings)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT user_id, user_agent FROM heartbeats")).all() == [("alice", UA)]
        assert conn.execute(sa.text("SELECT editor FROM user_agents")).scalars().all() == ["vscode"]


def test_redis_down_gets_503_so_the_client_retries(db, key, settings):
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(dead, broker=make_broker(dead), engine=db)
    for url in serve(app, dead):
        status, answer, headers = post(f"{url}/api/v1/users/current/heartbeats.bulk",
                                       [{"entity": "a.py", "time": time.time()}], basic(key))  # fmt: skip
        assert status == 503 and "retry" in answer["error"]
        assert int(headers["retry-after"]) > 0
        with urllib.request.urlopen(f"{url}/healthz") as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/readyz")
        assert e.value.code == 503
        # the reason (an address, a port, an exception) is for the log, not for whoever probes
        assert json.loads(e.value.read()) == {"ok": False, "error": "redis unavailable"}


def test_database_down_gets_503_so_the_client_retries(broker, settings):
    dead = create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/hbw")
    for url in serve(create_app(settings, broker=broker, engine=dead), settings):
        status, answer, headers = post(f"{url}{BULK}", [{"entity": "a.py", "time": time.time()}],
                                       basic("waka_3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10"))  # fmt: skip
        assert status == 503 and "retry" in answer["error"]
        assert int(headers["retry-after"]) > 0


def test_an_unencodable_item_is_rejected_alone(web, key, db, settings):
    """JSON allows a lone surrogate escape, which no UTF-8 text (nor the queue) can hold: the item
    holding one gets its 400 in the responses, the others are enqueued and stored."""
    t = time.time() - 600
    body = [
        {"entity": "a.py", "time": t},
        {"entity": "\ud800.py", "time": t},  # json.dumps sends it as the escape "\\ud800"
        {"entity": "b.py", "time": t, "note": "\udfff"},  # in a field nobody reads
        {"entity": "c.py", "time": t + 60},
    ]
    status, answer, _ = post(web + BULK, body, basic(key))
    assert status == 201
    assert [s for _, s in answer["responses"]] == [201, 400, 400, 201]
    assert "surrogates not allowed" in answer["responses"][1][0]["error"]
    assert answer["responses"][3][0]["data"]["entity"] == "c.py"
    status, answer, _ = post(f"{web}/api/v1/users/current/heartbeats", body[1], basic(key))
    assert status == 400 and "surrogates not allowed" in answer["error"]
    drain(settings)
    with db.connect() as conn:
        entities = conn.execute(sa.text("SELECT entity FROM heartbeats ORDER BY entity")).scalars().all()
    assert entities == ["a.py", "c.py"]
