"""Two cells (issue #19, item 5; docs/cells.md): each its own PostgreSQL (cell a reading from a
streaming replica) and Redis on free ports, started here; `hbw db init` and a burst `hbw worker`
per cell; ONE `hbw serve` with HBW_CELLS in front of both. Heartbeats of every user, posted over
HTTP, land in their user's cell only and derive there exactly as the reference says; reads answer
from the user's own cell; a key never counts outside its user's cell; with one cell's Redis
stopped, that cell's users get 503 and the other's 201."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from jobs.keys import create_key, revoke_key
from tests import reference, streams
from tests.conftest import free_port
from tests.integration.test_cli import hbw
from tests.replica import primary_and_replica, wait_replayed
from tests.sentinel import Cluster
from tests.tables import diff, snapshot
from tests.web_client import BULK, basic, call, post
from worker.cells import rendezvous

pytestmark = [pytest.mark.slow, pytest.mark.cells]
UA = "wakatime/v1.90.0 (linux-6.1.0) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"
STATS = "/api/v1/users/{user}/stats/all_time"


@dataclass
class Deployment:
    cells_file: Path
    database: dict[str, str]  # cell -> DATABASE_URL
    replica: dict[str, str]
    redis: dict[str, int]  # cell -> Redis port
    redis_servers: Cluster
    url: str = ""  # hbw serve
    keys: dict[str, str] = field(default_factory=dict)  # user -> its key
    items: dict[str, list[dict]] = field(default_factory=dict)  # cell -> what its users sent
    engines: dict[tuple[str, bool], sa.Engine] = field(default_factory=dict)

    def env(self, cell: str) -> dict[str, str]:
        """A process of cell `cell` alone: plain `hbw` with its URLs."""
        return {"DATABASE_URL": self.database[cell], "REDIS_URL": f"redis://127.0.0.1:{self.redis[cell]}/0",
                "HBW_METRICS_PORT": "0"}  # fmt: skip

    def engine(self, cell: str, *, replica: bool = False) -> sa.Engine:
        if (cell, replica) not in self.engines:
            url = (self.replica if replica else self.database)[cell]
            self.engines[cell, replica] = create_engine(url, pool_size=1)
        return self.engines[cell, replica]


@contextlib.contextmanager
def two_cells() -> Iterator[Deployment]:
    """PostgreSQL (each with a replica) and Redis for cells a and b; stopped and removed after."""
    home = Path(tempfile.mkdtemp(prefix="hbw-cells-"))
    servers = Cluster(home, sentinel_ports=[])
    try:
        with primary_and_replica() as (db_a, replica_a), primary_and_replica() as (db_b, replica_b):
            redis = {"a": free_port(), "b": free_port()}
            for port in redis.values():
                servers.start_server(port)
            (home / "cells.toml").write_text(
                f'[cells.a]\ndatabase_url = "{db_a}"\ndatabase_read_url = "{replica_a}"\n'
                f'redis_url = "redis://127.0.0.1:{redis["a"]}/0"\n'
                f'[cells.b]\ndatabase_url = "{db_b}"\nredis_url = "redis://127.0.0.1:{redis["b"]}/0"\n'
            )
            deployment = Deployment(home / "cells.toml", {"a": db_a, "b": db_b}, {"a": replica_a, "b": replica_b},
                                    redis, servers)  # fmt: skip
            try:
                yield deployment
            finally:
                for engine in deployment.engines.values():
                    engine.dispose()
    finally:
        for process in servers.servers.values():
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def serve(cells_file: Path) -> Iterator[str]:
    """`hbw serve` with HBW_CELLS, and no DATABASE_URL or REDIS_URL of its own."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"HBW_CELLS": str(cells_file), "HBW_SERVE_METRICS_PORT": "0", "HBW_HTTP_KEY_CACHE_SECONDS": "1"}
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    if call("GET", f"{url}/healthz")[0] == 200:
                        break
                assert process.poll() is None and time.monotonic() < deadline, (
                    log.seek(0) or log.read()[-3000:]
                )
                time.sleep(0.1)
            yield url
            process.terminate()  # uvicorn stops gracefully, then re-raises the signal
            code = process.wait(30)
            log.seek(0)
            output = log.read()
            assert code in (0, -signal.SIGTERM) and "Traceback" not in output, output[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def operator_key(deployment: Deployment, user: str) -> str:
    """A key made as docs/cells.md tells an operator: `hbw keys create` on the user's cell."""
    script = f'eval "$({sys.executable} -m worker.cells env --user "$U")" && {sys.executable} -m worker.cli keys create "$U"'
    env = {**os.environ, "HBW_CELLS": str(deployment.cells_file), "U": user}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def with_agent(items: list[dict]) -> list[dict]:
    """The items as `hbw serve` stores them: those without a user agent take the header's."""
    return [{**item, "user_agent": item.get("user_agent") or UA} for item in items]


@pytest.fixture(scope="module")
def cells(settings) -> Iterator[Deployment]:
    """Both cells initialised, every user's heartbeats posted through one `hbw serve` and stored
    by each cell's own worker."""
    started = time.monotonic()
    with two_cells() as deployment:
        for cell in ("a", "b"):
            done = hbw("db", "init", env=deployment.env(cell))
            assert done.returncode == 0, done.stderr.decode()[-2000:]
        stream = streams.generate(seed=5, users=6, days=2, invalid_share=0.0)
        by_user: dict[str, list[dict]] = {}
        for item in stream.valid:
            by_user.setdefault(item["user_id"], []).append(item)
        assignment = {user: rendezvous(user, ("a", "b")) for user in by_user}
        assert sorted(set(assignment.values())) == ["a", "b"], assignment  # both cells have users
        first, *others = sorted(by_user)
        deployment.keys[first] = operator_key(deployment, first)
        for user in others:
            with deployment.engine(assignment[user]).begin() as conn:
                deployment.keys[user] = create_key(conn, user)
        with serve(deployment.cells_file) as url:
            deployment.url = url
            for user, items in by_user.items():
                for start in range(0, len(items), 300):
                    status, body, _ = post(
                        url + BULK,
                        items[start : start + 300],
                        {**basic(deployment.keys[user]), "User-Agent": UA},
                    )
                    assert status == 201 and {s for _, s in body["responses"]} == {201}, body
                deployment.items.setdefault(assignment[user], []).extend(items)
            workers = [subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--burst", "-p", "1", "-t", "2"],
                                        env={**os.environ, **deployment.env(cell)}, stderr=subprocess.PIPE)
                       for cell in ("a", "b")]  # fmt: skip
            for worker in workers:
                _, err = worker.communicate(timeout=180)
                assert worker.returncode == 0, err.decode()[-3000:]
            print(
                f"\ntwo cells up, {len(stream.valid)} heartbeats posted and stored in {time.monotonic() - started:.1f}s"
            )
            yield deployment


def test_each_users_heartbeats_are_in_its_cell_only_and_derive_there_as_the_reference(cells):
    for cell in ("a", "b"):
        engine = cells.engine(cell)
        mine = {item["user_id"] for item in cells.items[cell]}
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT DISTINCT user_id FROM heartbeats")).scalars())
        assert stored == mine and all(rendezvous(user, "ab") == cell for user in stored)
        expected = reference.compute(with_agent(cells.items[cell]))
        assert diff(expected, snapshot(engine)) == []


def test_reads_answer_from_the_users_own_cell(cells):
    wait_replayed(cells.engine("a"), cells.engine("a", replica=True))  # cell a reads from its replica
    for cell in ("a", "b"):
        expected = reference.compute(with_agent(cells.items[cell]))
        for user in {item["user_id"] for item in cells.items[cell]}:
            total = sum(t.seconds for (u, *_), t in expected.activity_days.items() if u == user)
            status, body, _ = call(
                "GET", cells.url + STATS.format(user="current"), headers=basic(cells.keys[user])
            )
            assert status == 200, body
            assert body["data"]["total_seconds_including_other_language"] == pytest.approx(total, abs=1e-6)
            assert total > 0
    a_user = next(u for u in cells.keys if rendezvous(u, "ab") == "a")
    b_user = next(u for u in cells.keys if rendezvous(u, "ab") == "b")
    status, body, _ = call("GET", cells.url + STATS.format(user=b_user), headers=basic(cells.keys[a_user]))
    assert status == 403, body  # a key reads its own user only, whichever cell the other is in


def test_a_key_never_counts_outside_its_users_cell(cells):
    """A key of an a user stored in cell b (as a wrong `hbw keys create` would) is unknown: b's
    app never sees it, nothing is queued there, and the user's own key still works."""
    a_user = next(u for u in cells.keys if rendezvous(u, "ab") == "a")
    with cells.engine("b").begin() as conn:
        misplaced = basic(create_key(conn, a_user))
    heartbeat = {"entity": "x.py", "type": "file", "time": time.time(), "project": "p", "user_agent": UA}
    for _ in range(2):  # looked up, then cached
        status, body, _ = post(cells.url + "/api/v1/users/current/heartbeats", heartbeat, misplaced)
        assert (status, body) == (401, {"error": "unknown or revoked API key"})
        assert call("GET", cells.url + STATS.format(user="current"), headers=misplaced)[0] == 401
    status, body, _ = call(
        "GET", cells.url + "/api/v1/users/current", headers={"Authorization": "Basic bm9wZQ=="}
    )
    assert status == 401, body  # no key at all: the address's cell's app answers
    import redis

    for cell in ("a", "b"):
        client = redis.Redis(port=cells.redis[cell])
        assert client.llen(f"{os.environ['HBW_REDIS_NAMESPACE']}:heartbeats") == 0
        client.close()


def test_a_revoked_key_stops_within_the_key_cache_time(cells):
    b_user = next(u for u in sorted(cells.keys) if rendezvous(u, "ab") == "b")
    with cells.engine("b").begin() as conn:
        key = create_key(conn, b_user)
    assert call("GET", cells.url + STATS.format(user="current"), headers=basic(key))[0] == 200
    with cells.engine("b").begin() as conn:
        revoke_key(conn, key)
    time.sleep(1.2)  # HBW_HTTP_KEY_CACHE_SECONDS=1
    assert call("GET", cells.url + STATS.format(user="current"), headers=basic(key))[0] == 401


def test_a_cell_whose_redis_is_down_refuses_only_its_own_users(cells):
    a_user = next(u for u in sorted(cells.keys) if rendezvous(u, "ab") == "a")
    b_user = next(u for u in sorted(cells.keys) if rendezvous(u, "ab") == "b")
    with cells.engine("a").begin() as conn:  # a key serve has never seen: looked up while b is down
        fresh = basic(create_key(conn, a_user))
    cells.redis_servers.kill(cells.redis["b"])
    heartbeat = {"entity": "y.py", "type": "file", "time": time.time(), "project": "p", "user_agent": UA}
    status, body, headers = post(cells.url + BULK, [heartbeat], basic(cells.keys[b_user]))
    assert status == 503 and "retry-after" in headers, body
    for auth in (basic(cells.keys[a_user]), fresh):
        status, body, _ = post(cells.url + BULK, [heartbeat], auth)
        assert status == 201 and body["responses"][0][1] == 201, body
        assert call("GET", cells.url + STATS.format(user="current"), headers=auth)[0] == 200
    assert call("GET", cells.url + STATS.format(user="current"), headers=basic(cells.keys[b_user]))[0] == 503
    status, body, _ = call("GET", cells.url + "/readyz")
    assert (status, body) == (200, {"ok": True, "cells": {"a": "ok", "b": "redis unavailable"}})


def stop_postgres(url: str) -> None:
    """A fast shutdown of the server at `url` (its postmaster: the parent of our backend)."""
    engine = create_engine(url, pool_size=1)
    with engine.connect() as conn:
        backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        status = Path(f"/proc/{backend}/status").read_text().splitlines()
    engine.dispose()
    postmaster = int(next(line.split()[1] for line in status if line.startswith("PPid:")))
    os.kill(postmaster, signal.SIGINT)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{postmaster}").exists():
        assert time.monotonic() < deadline, "PostgreSQL did not stop"
        time.sleep(0.05)


def test_a_cell_whose_postgresql_is_down_does_not_hide_the_other_cells_keys(cells):
    """A key not seen before is looked up in every cell: found in its user's cell, it is served
    though b does not answer; found nowhere, it might be in b: 503, not 401."""
    a_user = next(u for u in sorted(cells.keys) if rendezvous(u, "ab") == "a")
    with cells.engine("a").begin() as conn:
        fresh = basic(create_key(conn, a_user))
    stop_postgres(cells.database["b"])
    heartbeat = {"entity": "z.py", "type": "file", "time": time.time(), "project": "p", "user_agent": UA}
    status, body, _ = post(cells.url + BULK, [heartbeat], fresh)
    assert status == 201 and body["responses"][0][1] == 201, body
    unknown = basic("waka_" + str(uuid.uuid4()))
    status, body, headers = post(cells.url + BULK, [heartbeat], unknown)
    assert status == 503 and "retry-after" in headers, body
