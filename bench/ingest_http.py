"""python -m bench.ingest_http: load test of `hbw serve` on loopback.

Starts `hbw serve` (as the Procfile's web line does) against the configured servers (or the
embedded ones), with a database and Redis namespace of its own, and keeps it busy from concurrent
clients (coroutines of one asyncio process, light enough that 200 of them leave the cores to the
server), each with its own API key and keep-alive connection, posting bulk requests of 25 (or, with
``--batch 1-25``, a random 1 to 25) heartbeats the way wakatime-cli does. Reports requests/s,
heartbeats/s, latency p50/p99, store messages per request (group commit, worker.http.groups), and
checks that every acknowledged heartbeat is on the queue. No workers run: this measures the ingest
alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time

import orjson
import redis
from rich.console import Console

from bench import harness
from bench.harness import recreate_database
from bench.procs import hbw_command
from db.schema import apply_schema
from jobs.keys import create_key
from worker.cli.common import servers_for
from worker.database import get_engine
from worker.errors import ConfigError
from worker.settings import get_settings

DATABASE = "hbw_bench_http"
NAMESPACE = "hbw-bench-http"
UA = "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="how long to keep it busy (default 20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--server-workers", type=int, default=1, help="`hbw serve --workers` (default 1)")
    parser.add_argument(
        "--batch", type=_sizes, default=(25, 25), help="heartbeats per request: N, or LOW-HIGH (default 25)"
    )
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


def _sizes(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    sizes = (int(low), int(high or low))
    if not 1 <= sizes[0] <= sizes[1]:
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH with 1 <= LOW <= HIGH, got {text!r}")
    return sizes


def bodies(count: int, sizes: tuple[int, int], seed: int) -> list[tuple[bytes, int]]:
    """Request bodies with how many heartbeats each holds."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for _ in range(count):
        n = rng.randint(*sizes)
        out.append((json.dumps([heartbeat(rng, now) for _ in range(n)]).encode(), n))
    return out


async def client_loop(port: int, key: str, payloads: list[tuple[bytes, int]], stop: asyncio.Event,
                      out: dict) -> None:  # fmt: skip
    """One keep-alive connection posting `payloads` in turn until `stop`."""
    auth = base64.b64encode(key.encode()).decode()
    head = (f"POST /api/v1/users/current/heartbeats.bulk HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\nUser-Agent: {UA}\r\n"
            "X-Machine-Name: bench\r\nContent-Length: ")  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = random.Random(key).randrange(len(payloads))  # clients start at different bodies
    while not stop.is_set():
        body, n = payloads[i % len(payloads)]
        started = time.perf_counter()
        writer.write(f"{head}{len(body)}\r\n\r\n".encode() + body)
        status_line, *headers = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(int(h.split(b":")[1]) for h in headers if h.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        out["latencies"].append(time.perf_counter() - started)
        status = int(status_line.split(b" ")[1])
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        if status == 201:
            out["heartbeats"] += n
        i += 1
    writer.close()


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
    port = harness.free_port()
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
        harness.wait_ready(port, server)
        payloads = bodies(200, args.batch, seed=1)
        outs = [{"latencies": [], "statuses": {}, "heartbeats": 0} for _ in keys]
        sizes = "-".join(map(str, sorted(set(args.batch))))
        console.print(f"{args.clients} clients x {sizes} heartbeats per request for {args.seconds:.0f} s ...")
        elapsed = asyncio.run(load(port, keys, payloads, outs, args.seconds))
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted(x for out in outs for x in out["latencies"])
    statuses: dict[str, int] = {}
    for out in outs:
        for status, n in out["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    ok_requests = statuses.get("201", 0)
    acknowledged = sum(out["heartbeats"] for out in outs)
    queued_messages, queued_heartbeats = _queued(client)
    return {
        "clients": args.clients,
        "server_workers": args.server_workers,
        "heartbeats_per_request": sizes,
        "group_window_ms": os.environ.get("HBW_HTTP_GROUP_WINDOW_MS", "default"),
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "statuses": statuses,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "heartbeats_per_s": round(acknowledged / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "queued_messages": queued_messages,
        "messages_per_request": round(queued_messages / max(ok_requests, 1), 3),
        # every 201 put its heartbeats on the queue, and nothing else is there
        "ok": ok_requests == len(latencies) and queued_heartbeats == acknowledged,
    }


async def load(port: int, keys: list[str], payloads: list[tuple[bytes, int]], outs: list[dict],
               seconds: float) -> float:  # fmt: skip
    """Run a client per key for `seconds`; the seconds it took until every client stopped."""
    stop = asyncio.Event()
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(client_loop(port, key, payloads, stop, out))
        for key, out in zip(keys, outs, strict=True)
    ]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


def _queued(client: redis.Redis) -> tuple[int, int]:
    """Store messages on the heartbeats queue, and the heartbeats they carry."""
    messages = heartbeats = 0
    for _, data in client.hscan_iter(f"{NAMESPACE}:heartbeats.msgs", count=1000):
        messages += 1
        heartbeats += len(orjson.loads(data)["args"][0])
    return messages, heartbeats


if __name__ == "__main__":
    sys.exit(main())
