"""python -m bench.ingest_http: load test of `hbw serve` on loopback.

Starts `hbw serve` (as the Procfile's web line does) against the configured servers (or the
embedded ones), with a database and Redis namespace of its own, and keeps it busy from client
threads, each with its own API key and keep-alive connection, posting 25-heartbeat bulk requests
the way wakatime-cli does. Reports requests/s, heartbeats/s, latency p50/p99, and checks that every
acknowledged heartbeat is on the queue. No workers run: this measures the ingest alone.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request

import redis
from rich.console import Console

from bench.phases import recreate_database
from bench.procs import hbw_command
from db.schema import apply_schema
from jobs.keys import create_key
from worker.cli import ConfigError, servers_for
from worker.database import get_engine
from worker.settings import get_settings

DATABASE = "hbw_bench_http"
NAMESPACE = "hbw-bench-http"
UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long to keep it busy (default 20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--server-workers", type=int, default=1, help="`hbw serve --workers` (default 1)")
    parser.add_argument("--batch", type=int, default=25, help="heartbeats per request (default 25)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    return parser


def heartbeat(rng: random.Random, now: float) -> dict:
    """One heartbeat as wakatime-cli sends it."""
    return {
        "entity": f"/src/{rng.randrange(500)}.py",
        "type": "file",
        "category": "coding",
        "time": now - rng.uniform(0, 86_400),
        "project": f"p{rng.randrange(20)}",
        "branch": "main",
        "language": rng.choice(["Python", "Go", "TypeScript"]),
        "lines": 100,
        "lineno": 3,
        "cursorpos": 9,
        "is_write": rng.random() < 0.3,
        "dependencies": ["os"],
        "user_agent": UA,
    }


def bodies(count: int, batch: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    now = time.time()
    return [json.dumps([heartbeat(rng, now) for _ in range(batch)]).encode() for _ in range(count)]


def client_loop(port: int, key: str, payloads: list[bytes], stop: threading.Event, out: dict) -> None:
    headers = {
        "Authorization": "Basic " + base64.b64encode(key.encode()).decode(),
        "Content-Type": "application/json",
        "User-Agent": UA,
        "X-Machine-Name": "bench",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        conn.request("POST", "/api/v1/users/current/heartbeats.bulk", payloads[i % len(payloads)], headers)
        resp = conn.getresponse()
        resp.read()
        out["latencies"].append(time.perf_counter() - started)
        out["statuses"][resp.status] = out["statuses"].get(resp.status, 0) + 1
        i += 1
    conn.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        with servers_for(get_settings()) as settings:
            db_url = recreate_database(settings.database_url, DATABASE)
            engine = get_engine(db_url)
            with engine.begin() as conn:
                apply_schema(conn)
                keys = [create_key(conn, f"user-{i}") for i in range(args.clients)]
            client = redis.Redis.from_url(settings.redis_url)
            results = run(args, db_url, settings.redis_url, keys, client, console)
            for key in client.scan_iter(f"{NAMESPACE}:*", count=1000):
                client.delete(key)
            engine.dispose()
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        return 3
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results["ok"] else 1


def run(args, db_url: str, redis_url: str, keys: list[str], client: redis.Redis, console: Console) -> dict:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "HBW_REDIS_NAMESPACE": NAMESPACE,
        "HBW_HTTP_RATE_LIMIT_PER_MINUTE": "100000000",  # checked on every request, never refuses
    }
    command = [*hbw_command("serve", "--host", "127.0.0.1", "--port", str(port)),
               "--workers", str(args.server_workers)]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, server)
        payloads = bodies(200, args.batch, seed=1)
        stop = threading.Event()
        outs = [{"latencies": [], "statuses": {}} for _ in keys]
        threads = [
            threading.Thread(target=client_loop, args=(port, key, payloads, stop, out), daemon=True)
            for key, out in zip(keys, outs, strict=True)
        ]
        console.print(
            f"{args.clients} clients x {args.batch} heartbeats per request for {args.seconds:.0f} s ..."
        )
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(60)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted(x for out in outs for x in out["latencies"])
    statuses: dict[str, int] = {}
    for out in outs:
        for status, n in out["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    ok_requests = statuses.get("201", 0)
    queued_messages = client.llen(f"{NAMESPACE}:heartbeats")
    return {
        "clients": args.clients,
        "server_workers": args.server_workers,
        "heartbeats_per_request": args.batch,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "statuses": statuses,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "heartbeats_per_s": round(ok_requests * args.batch / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "queued_messages": queued_messages,
        # every 201 put its heartbeats on the queue (one message each: 25 < HBW_BATCH_SIZE)
        "ok": ok_requests == len(latencies) and queued_messages == ok_requests,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hbw serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("hbw serve did not become ready")


if __name__ == "__main__":
    sys.exit(main())
