"""`hbw serve`'s app on a free port, and the calls a client makes of it: shared by the tests of
the HTTP ingest and reads (tests/integration/test_web*.py, test_reads*.py, test_redis_full.py)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import uvicorn

from jobs.keys import create_key
from jobs.users import set_time_zone
from tests import reference, streams
from tests.conftest import drain, free_port
from worker.http.limits import uvicorn_options
from worker.producer import enqueue_heartbeats
from worker.settings import Settings

BULK = "/api/v1/users/current/heartbeats.bulk"


def serve(app, settings: Settings) -> Iterator[str]:
    """`app` on a free port, with the connection limits of `hbw serve` taken from `settings`."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on",
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


def post(url: str, body, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    return call("POST", url, body, headers)


def call(method: str, url: str, body=None, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """(status, decoded JSON body, lower-cased headers) of one request; every answer must be JSON."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
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


def stored_stream(db, broker, settings, *, seed: int, users: int, days: int, zone: str | None = None):
    """A stream stored by the workers, and its first user with an API key (and `zone`):
    (stream, the reference computed from it, user_id, the Basic auth header of the key)."""
    stream = streams.generate(seed=seed, users=users, days=days, invalid_share=0.0)
    user_id = stream.valid[0]["user_id"]
    with db.begin() as conn:
        auth = basic(create_key(conn, user_id))
        if zone:
            set_time_zone(conn, user_id, zone)
    enqueue_heartbeats(stream.items, batch_size=300, broker=broker)
    drain(settings)
    return stream, reference.compute(stream.valid, zones={user_id: zone} if zone else None), user_id, auth
