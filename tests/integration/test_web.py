"""`hbw serve` over real HTTP: WakaTime's endpoints, auth, limits, and Redis being down."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import uvicorn

from db.engine import create_engine
from jobs.keys import create_key, revoke_key
from tests.conftest import drain, free_port
from worker.http.app import create_app
from worker.http.limits import uvicorn_options
from worker.runtime.broker import make_broker
from worker.settings import Settings

UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"


def serve(app, settings: Settings) -> Iterator[str]:
    """`app` on a free port, with the connection limits of `hbw serve` taken from `settings`."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off",
        **uvicorn_options(settings),
    )  # fmt: skip
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
    settings = settings.model_copy(update=overrides)
    yield from serve(create_app(settings, broker=broker, engine=db), settings)


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


# -- limits on connections, addresses and items ---------------------------------------------------


def raw_request(url: str, data: bytes, *, read_timeout: float = 30) -> bytes:
    """Send `data` as is on a new connection; everything the server answers until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def head(path: str, *headers: str, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: hbw", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def basic_header(key: str) -> str:
    return "Authorization: " + basic(key)["Authorization"]


BULK = "/api/v1/users/current/heartbeats.bulk"


def test_request_headers_over_the_limit_get_431_before_authentication(web, key, broker):
    limit = 16 * 1024  # HBW_HTTP_MAX_HEADER_BYTES's default
    # a whole head over the limit, arriving in one piece: 431, not 401 (no key was looked at)
    answer = raw_request(web, head(BULK, "X-Pad: " + "a" * (limit + 1), length=2) + b"[]")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert f"larger than {limit} bytes".encode() in answer

    # a header that never ends (a 100 MB one was read to its end before): the server answers and
    # closes once the limit is passed, without waiting for the rest
    host, port = web.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {BULK} HTTP/1.1\r\nHost: hbw\r\nX-Pad: ".encode())
        try:
            for _ in range(128):  # 8 MB, never the end of the header
                sock.sendall(b"a" * 65536)
            sock.settimeout(10)
            answer = sock.recv(65536)  # its 431, or the end of the connection
            closed = answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        except TimeoutError:
            closed = False
    assert closed, "the server kept reading a header that never ends"

    # below the limit, with a body far larger than it in the same reads, a request goes through
    body = json.dumps([{"entity": "a.py", "time": time.time(), "pad": "x" * 1_000_000}]).encode()
    headers = [basic_header(key), "Content-Type: application/json", "X-Pad: " + "a" * (limit - 1024)]
    answer = raw_request(web, head(BULK, *headers, "Connection: close", length=len(body)) + body)
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert queued(broker) == 1


class Recorder(asyncio.Protocol):
    """Keeps every byte the server sent, even when the connection then ends in a reset (a
    StreamReader would raise instead and drop them)."""

    def __init__(self) -> None:
        self.received, self.closed = b"", asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def slow_client(url: str, first: bytes, drip: bytes, seconds: float) -> tuple[bytes, bool]:
    """Send `first`, then `drip` a byte at a time over `seconds` (or nothing more for that long);
    (the answer, whether the server closed the connection while the client was still at it)."""
    host, port = url.removeprefix("http://").split(":")
    transport, client = await asyncio.get_running_loop().create_connection(Recorder, host, int(port))
    try:
        transport.write(first)
        for byte in drip:
            if client.closed.done():
                break
            transport.write(bytes([byte]))
            await asyncio.sleep(seconds / len(drip))
        if not drip:
            await asyncio.wait([client.closed], timeout=seconds)
        cut_off = client.closed.done()
        await asyncio.wait([client.closed], timeout=10)
        return client.received, cut_off
    finally:
        transport.close()


@pytest.mark.parametrize(
    "web", [{"http_header_timeout_seconds": 0.5, "http_body_timeout_seconds": 0.5}], indirect=True
)
def test_slow_clients_are_cut_off_at_the_header_and_body_deadlines(web, key, broker):
    """Slow loris: connections that send nothing, or their headers or body a byte at a time, are
    answered 408 and closed at their deadline (0.5 s here), long before they are done (15 s);
    meanwhile a normal client is served."""
    auth = basic_header(key)
    slow_head = (head(BULK, auth).removesuffix(b"\r\n"), b"X-Slow: " + b"a" * 60 + b"\r\n\r\n")
    slow_body = (head(BULK, auth, length=100), b'[{"entity": "a.py", "time": 1}]'.ljust(100))

    async def run():
        clients = [slow_client(web, b"", b"", 15) for _ in range(20)]  # idle: sends nothing
        clients += [slow_client(web, *slow_head, 15) for _ in range(20)]
        clients += [slow_client(web, *slow_body, 15) for _ in range(20)]
        tasks = [asyncio.ensure_future(client) for client in clients]
        await asyncio.sleep(0.2)
        ok = await asyncio.to_thread(post, web + BULK, [{"entity": "b.py", "time": time.time()}], basic(key))
        return ok[0], await asyncio.gather(*tasks)

    status, results = asyncio.run(run())
    assert status == 201
    for i, (answer, cut_off) in enumerate(results):
        kind = ("idle", "slow headers", "slow body")[i // 20]
        assert cut_off, f"{kind}: the server kept the connection until the client was done"
        assert answer.startswith(b"HTTP/1.1 408 "), (kind, answer[:80])
        assert (b"body" if kind == "slow body" else b"headers") in answer
    assert queued(broker) == 1  # only the normal client's heartbeat


def test_a_client_that_disconnects_mid_body_is_not_an_error(web, key, log_events):
    with socket.create_connection(web.removeprefix("http://").split(":")) as sock:
        sock.sendall(head(BULK, basic_header(key), length=1000) + b'[{"entity": ')
    deadline = time.monotonic() + 20
    while not any(e["event"] in ("http.client_disconnected", "Exception in ASGI application\n")
                  for e in log_events()):  # fmt: skip
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.05)
    assert [e for e in log_events() if e["level"] in ("error", "critical")] == []
    assert [e["event"] for e in log_events() if e["event"].startswith("http.")] == [
        "http.client_disconnected"
    ]


@pytest.mark.parametrize("web", [{"http_auth_failures_per_minute": 3}], indirect=True)
def test_failed_authentications_are_limited_per_client_address(web, key, db, broker, settings):
    """Past its budget of failures an address gets 429 whatever the key, in every server process
    (the count is in Redis); X-Forwarded-For is believed only from a configured trusted proxy."""
    body = [{"entity": "a.py", "time": time.time()}]
    wrong = basic("waka_3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10")
    limited = settings.model_copy(update={"http_auth_failures_per_minute": 3, "http_key_cache_seconds": 0})
    other_process = serve(create_app(limited, broker=broker, engine=db), limited)
    other = next(other_process)
    proxied = limited.model_copy(update={"http_trusted_proxies": "127.0.0.1"})
    behind_proxy = serve(create_app(proxied, broker=broker, engine=db), proxied)
    proxy = next(behind_proxy)
    try:
        assert [post(web + BULK, body, wrong)[0] for _ in range(2)] == [401, 401]
        assert post(other + BULK, body, {})[0] == 401  # a missing key is a failure too
        status, answer, headers = post(other + BULK, body, wrong)
        assert status == 429 and "failed authentications" in answer["error"]
        assert 1 <= int(headers["retry-after"]) <= 60
        # the right key from this address is refused as well, so guessing learns nothing
        assert post(web + BULK, body, basic(key))[0] == 429
        # and a forged X-Forwarded-For changes nothing where no proxy is trusted
        assert post(web + BULK, body, {**basic(key), "X-Forwarded-For": "203.0.113.9"})[0] == 429
        assert queued(broker) == 0

        # behind a trusted proxy each forwarded address has its own budget
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        assert post(proxy + BULK, body, {**basic(key), **forwarded})[0] == 201
        assert [post(proxy + BULK, body, {**wrong, **forwarded})[0] for _ in range(4)] == [401] * 3 + [429]
        assert post(proxy + BULK, body, {**basic(key), **forwarded})[0] == 429
        assert post(proxy + BULK, body, {**basic(key), "X-Forwarded-For": "203.0.113.10"})[0] == 201
        assert queued(broker) == 2
    finally:
        other_process.close()
        behind_proxy.close()


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


def reachable(host: str, port: int) -> bool:
    """127.0.0.2 stands for any address other than 127.0.0.1: a socket bound to 0.0.0.0 answers
    there, one bound to 127.0.0.1 does not."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_hbw_serve_listens_on_loopback_unless_told(settings):
    port = free_port()
    command = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "-w", "2"]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not reachable("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, "hbw serve did not start"
            time.sleep(0.1)
        assert not reachable("127.0.0.2", port)
        # the limits hold in `hbw serve`'s own processes too
        answer = raw_request(f"http://127.0.0.1:{port}", head(BULK, "X-Pad: " + "a" * 20_000, length=0))
        assert answer.startswith(b"HTTP/1.1 431 ")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_worker_metrics_listen_on_loopback_unless_told(settings):
    from worker.cli.workers import metrics_server

    for host, elsewhere in ((None, False), ("0.0.0.0", True)):
        update = {"metrics_port": free_port(), **({"metrics_host": host} if host else {})}
        metrics = settings.model_copy(update=update)
        with metrics_server(metrics, 1):
            assert reachable("127.0.0.1", metrics.metrics_port)
            assert reachable("127.0.0.2", metrics.metrics_port) is elsewhere
