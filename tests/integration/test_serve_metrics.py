"""`hbw serve`'s Prometheus metrics (worker.http.metrics), from the command itself with two server
processes: answers by route template and status, summed over the processes, and the groups the
ingest enqueued."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from jobs.keys import create_key
from tests.conftest import free_port
from tests.integration.test_web_limits import reachable
from tests.web_client import BULK, basic, call, post

NOW = time.time()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests(samples, route: str, status: int, method: str = "POST") -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return samples.get(("hbw_http_requests_total", labels), 0.0)


def test_hbw_serve_counts_answers_by_route_and_status_across_its_processes(db, settings):
    with db.begin() as conn:
        alice, bob = create_key(conn, "alice"), create_key(conn, "bob")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HBW_SERVE_METRICS_PORT": str(metrics_port),
        "HBW_HTTP_RATE_LIMIT_PER_MINUTE": "6",
        "HBW_HTTP_MAX_BODY_BYTES": "20000",
        "HBW_HTTP_KEY_CACHE_SECONDS": "0",
    }
    command = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "-w", "2"]
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (reachable("127.0.0.1", port) and reachable("127.0.0.1", metrics_port)):
            assert server.poll() is None and time.monotonic() < deadline, "hbw serve did not start"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        stored = 0
        for i in range(8):  # alice: 6 within her budget, then 429
            batch = [{"entity": f"f{i}-{j}", "type": "file", "time": NOW - i * 60 - j} for j in range(i + 1)]
            status, _, _ = post(base + BULK, batch, basic(alice))
            assert status == (201 if i < 6 else 429)
            stored += len(batch) if i < 6 else 0
        assert post(base + BULK, [{"entity": "x" * 30_000, "time": NOW}], basic(bob))[0] == 413
        assert post(base + BULK, b"[{", basic(bob))[0] == 400
        assert post(base + BULK, [], {"Authorization": "Basic bm9wZQ=="})[0] == 401
        assert call("GET", base + "/api/v2/projects/secret-name", None, basic(bob))[0] == 404
        assert call("GET", base + "/no/such/page/for-user-42", None, basic(bob))[0] == 404
        assert call("GET", base + "/healthz")[0] == 200
        samples = scrape(metrics_port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    route = "/api/v1/users/current/heartbeats.bulk"
    assert requests(samples, route, 201) == 6
    assert requests(samples, route, 429) == 2
    assert requests(samples, route, 413) == 1
    assert requests(samples, route, 400) == 1
    assert requests(samples, route, 401) == 1
    assert requests(samples, "/api/v2/projects/{name:path}", 404, "GET") == 1
    assert requests(samples, "unmatched", 404, "GET") == 1  # never the path a client made up
    assert requests(samples, "/healthz", 200, "GET") == 1
    assert not [key for key in samples if "for-user-42" in str(key) or "secret-name" in str(key)]
    latency = samples[("hbw_http_request_duration_seconds_count", (("route", route),))]
    assert latency == 11
    # every accepted heartbeat went to Redis in a group, whichever process took its request
    assert samples[("hbw_http_group_heartbeats_sum", ())] == stored
    assert samples[("hbw_http_group_requests_sum", ())] == 6
