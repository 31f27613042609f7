"""`hbw serve` over real HTTP: WakaTime's endpoints, auth, limits, and Redis being down."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import uvicorn

from jobs.keys import create_key, revoke_key
from tests.conftest import drain, free_port
from worker.broker import make_broker
from worker.web import create_app

UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"


def serve(app) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def web(db, broker, settings, request) -> Iterator[str]:
    """The ingest app on a free port; an indirect parameter (a dict of Settings fields) changes
    its settings. Keys are not cached, so a revocation shows at once."""
    overrides = {"http_key_cache_seconds": 0, **getattr(request, "param", {})}
    yield from serve(create_app(settings.model_copy(update=overrides), broker=broker, engine=db))


@pytest.fixture
def key(db) -> str:
    with db.begin() as conn:
        return create_key(conn, "alice")


def post(url: str, body, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json",
                                                                        **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), {k.lower(): v for k, v in e.headers.items()}


def basic(key: str) -> dict[str, str]:
    """What wakatime-cli sends: Basic with the base64 of the bare key."""
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


def queued(broker) -> int:
    return broker.client.llen(f"{broker.namespace}:heartbeats")


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


def test_wrong_or_missing_keys_get_401_and_enqueue_nothing(web, key, db, broker):
    url = f"{web}/api/v1/users/current/heartbeats.bulk"
    body = [{"entity": "a.py", "time": time.time()}]
    with db.begin() as conn:
        revoked = create_key(conn, "bob")
        revoke_key(conn, revoked)
    cases = {
        "no key": {},
        "not base64": {"Authorization": "Basic !!!"},
        "not a uuid": basic("hunter2"),
        "unknown key": basic("waka_3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10"),
        "revoked key": basic(revoked),
    }
    for case, headers in cases.items():
        status, answer, _ = post(url, body, headers)
        assert status == 401, case
        assert answer["error"], case
    assert queued(broker) == 0
    # the same request with the right key goes through (so the 401s were about the key)
    assert post(url, body, basic(key))[0] == 201
    assert post(url, body, {"Authorization": f"Bearer {key}"})[0] == 201
    assert queued(broker) == 2


@pytest.mark.parametrize(
    "web",
    [{"http_max_body_bytes": 4096, "http_max_heartbeats": 3, "http_rate_limit_per_minute": 5}],
    indirect=True,
)
def test_limits_and_malformed_bodies_get_clear_errors(web, key, broker):
    url = f"{web}/api/v1/users/current/heartbeats.bulk"
    one = {"entity": "a.py", "time": time.time()}

    status, answer, _ = post(url, [{**one, "entity": "x" * 5000}], basic(key))
    assert status == 413 and "4096 bytes" in answer["error"]
    status, answer, _ = post(url, [one] * 4, basic(key))
    assert status == 400 and "too many heartbeats: 4 > 3" in answer["error"]
    status, answer, _ = post(url, b'[{"entity": "a.py", "time": ', basic(key))
    assert status == 400 and "malformed JSON" in answer["error"]
    status, answer, _ = post(url, "just a string", basic(key))
    assert status == 400 and "array" in answer["error"]
    assert queued(broker) == 0

    # the rate limit counts requests per key per clock minute (the refused ones above never
    # reached it); keep the six requests inside one minute
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)
    statuses = [post(url, [one], basic(key))[0] for _ in range(5)]
    status, answer, headers = post(url, [one], basic(key))
    assert statuses == [201] * 5
    assert status == 429 and "rate limit" in answer["error"]
    assert 1 <= int(headers["retry-after"]) <= 61
    assert queued(broker) == 5


def test_redis_down_gets_503_so_the_client_retries(db, key, settings):
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(dead, broker=make_broker(dead), engine=db)
    for url in serve(app):
        status, answer, headers = post(f"{url}/api/v1/users/current/heartbeats.bulk",
                                       [{"entity": "a.py", "time": time.time()}], basic(key))  # fmt: skip
        assert status == 503 and "retry" in answer["error"]
        assert int(headers["retry-after"]) > 0
        with urllib.request.urlopen(f"{url}/healthz") as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/readyz")
        assert e.value.code == 503


def test_hbw_keys_create_list_revoke(db, capsys):
    from worker import cli

    assert cli.main(["keys", "create", "carol"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("waka_")
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT user_id, hint, key_hash FROM api_keys")).one()
    assert stored.user_id == "carol" and key.endswith(stored.hint)
    assert key.encode() not in bytes(stored.key_hash), "only a hash is stored"

    assert cli.main(["keys", "list", "carol", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["hint"] == f"...{key[-4:]}" and listed["revoked_at"] is None

    assert cli.main(["keys", "revoke", key]) == 0
    assert "carol" in capsys.readouterr().out
    assert cli.main(["keys", "revoke", key]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert cli.main(["keys", "revoke", "not-a-key"]) == 2
    capsys.readouterr()
    assert cli.main(["keys", "list", "carol", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None
