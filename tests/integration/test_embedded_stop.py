"""Stopping an embedded server always stops it, at once, and `hbw up` says whether it did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import redis

from tests.conftest import free_port
from tests.integration.test_embedded import hbw_env, postgres_answers, redis_answers
from worker.embedded import EmbeddedRedis, embedded_servers
from worker.embedded.server import pid_alive

pytestmark = pytest.mark.slow


def test_stop_waits_out_a_refused_shutdown_and_keeps_the_data(embedded_dir):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    server.start()
    pid = server.pid()
    try:
        client = redis.Redis.from_url(server.url)
        client.mset({"a": 1, "b": 2})
        # Redis refuses SHUTDOWN (and ignores SIGTERM) while it writes its first append-only
        # file, as after `appendonly` was switched on; this one takes a second per key.
        client.config_set("rdb-key-save-delay", 1_000_000)
        client.config_set("appendonly", "no")
        client.config_set("appendonly", "yes")
        with pytest.raises(redis.ResponseError, match="Errors trying to SHUTDOWN"):
            client.shutdown()
        server.stop()
        assert not pid_alive(pid)
        server.start()  # it waited for the clean shutdown: nothing was lost
        assert client.mget("a", "b") == [b"1", b"2"]
        server.stop()
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_stop_kills_a_redis_that_does_not_answer(embedded_dir):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    server.start()
    pid = server.pid()
    server.stop_timeout = 1
    os.kill(pid, signal.SIGSTOP)
    try:
        stopping = threading.Thread(target=server.stop, daemon=True)
        stopping.start()
        stopping.join(60)
        assert not stopping.is_alive() and not pid_alive(pid)
        assert not server.running()
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_redis_stops_without_retrying_the_connection_shutdown_closes(embedded_dir, monkeypatch):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    server.start()
    backoffs: list[float] = []
    monkeypatch.setattr("redis.retry.sleep", backoffs.append)  # redis-py's retry backoff
    server.stop()
    assert not server.running()
    assert backoffs == [], "SHUTDOWN closes its connection by design: retrying it only waits"


def test_up_says_when_other_commands_keep_the_servers_running(embedded_dir):
    pg_port, redis_port = free_port(), free_port()
    env = hbw_env(HBW_DATA_DIR=str(embedded_dir), HBW_EMBEDDED_PG_PORT=str(pg_port),
                  HBW_EMBEDDED_REDIS_PORT=str(redis_port), HBW_METRICS_PORT="0", HBW_LOG_FORMAT="json",
                  HBW_LOG_LEVEL="INFO")  # fmt: skip
    with embedded_servers(
        embedded_dir, postgres=True, redis_=True, pg_port=pg_port, redis_port=redis_port
    ) as lease:  # another hbw command holds them
        out, err = interrupted_up(env)
        assert "workers stopped; the embedded servers keep running for 1 other hbw command(s)" in out
        assert postgres_answers(lease.urls["DATABASE_URL"]) and redis_answers(lease.urls["REDIS_URL"])
        passwords = [urllib.parse.urlsplit(url).password for url in lease.urls.values()]
        assert "postgresql://postgres:***@127.0.0.1" in out and "redis://:***@127.0.0.1" in out
        assert not any(password in out + err for password in passwords)
    out, _ = interrupted_up(env)  # alone: it stops them
    assert out.splitlines()[-1] == "stopped"
    assert not postgres_answers(lease.urls["DATABASE_URL"]) and not redis_answers(lease.urls["REDIS_URL"])


def interrupted_up(env: dict) -> tuple[str, str]:
    """Run `hbw up` until its worker runs, then Ctrl-C; returns its stdout and stderr."""
    up = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "-p", "1", "-t", "1"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    output: dict[str, list[str]] = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda name=name, stream=stream: output[name].extend(stream), daemon=True)
        for name, stream in (("out", up.stdout), ("err", up.stderr))
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 120
    while not any('"worker.started"' in line for line in output["err"]):
        assert up.poll() is None and time.monotonic() < deadline, "".join(output["err"])[-3000:]
        time.sleep(0.1)
    up.send_signal(signal.SIGINT)
    try:
        up.wait(120)
    finally:
        up.kill()
    for reader in readers:
        reader.join()
    assert up.returncode == 0, "".join(output["err"])[-3000:]
    return "".join(output["out"]), "".join(output["err"])
