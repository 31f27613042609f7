"""python -m bench.failover: what Redis Sentinel costs and how long a failover stops producers.

Starts a private primary, two replicas and three sentinels (tests/sentinel.py), then measures
(1) an enqueue of 25 heartbeats with and without HBW_REDIS_WAIT_REPLICAS=1, and (2) a producer
enqueueing back to back while the primary is SIGKILLed: the time until the sentinels name another
master and until the producer's next enqueue is acknowledged. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.harness import percentiles
from tests.sentinel import MASTER, sentinel_cluster, wait_until
from worker.producer import EnqueueError, enqueue_heartbeats
from worker.runtime.broker import make_broker
from worker.settings import Settings


def heartbeats(n: int) -> list[dict]:
    now = time.time()
    return [{"user_id": "bench", "entity": f"f{i}.py", "time": now - i} for i in range(n)]


def enqueue_ms(broker, calls: int) -> tuple[float, float]:
    batch, samples = heartbeats(25), []
    for _ in range(calls):
        started = time.perf_counter()
        enqueue_heartbeats(batch, batch_size=25, broker=broker)
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def failover(cluster, broker) -> tuple[float, float]:
    """(seconds until the sentinels name a new master, seconds until an enqueue is acknowledged)."""
    acknowledged: list[float] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                enqueue_heartbeats(heartbeats(25), batch_size=25, broker=broker)
                acknowledged.append(time.monotonic())
            except EnqueueError:
                time.sleep(0.01)

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(1)
    old, killed = cluster.master_port(), time.monotonic()
    cluster.kill(old)
    wait_until(lambda: cluster.failed_over(old), 30, "a failover")
    named = time.monotonic() - killed
    wait_until(lambda: any(t > killed for t in acknowledged), 30, "an acknowledged enqueue")
    stop.set()
    thread.join()
    cluster.restart(old)  # it comes back as a replica, for the next round
    return named, min(t for t in acknowledged if t > killed) - killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="enqueue calls timed per setting")
    parser.add_argument("--failovers", type=int, default=3, help="primaries killed")
    args = parser.parse_args(argv)
    with sentinel_cluster(replicas=2) as cluster:
        settings = Settings(
            redis_url=f"redis://{MASTER}/0",
            redis_sentinels=cluster.sentinels,
            database_url="postgresql://-/-",
        )
        for wait in (0, 1):
            broker = make_broker(settings.model_copy(update={"redis_wait_replicas": wait}))
            p50, p99 = enqueue_ms(broker, args.calls)
            print(f"enqueue of 25 heartbeats, WAIT {wait}: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        broker = make_broker(settings.model_copy(update={"redis_wait_replicas": 1}))
        for n in range(args.failovers):
            named, acknowledged = failover(cluster, broker)
            print(f"failover {n + 1}: new master named after {named:.2f} s, next enqueue acknowledged after "
                  f"{acknowledged:.2f} s")  # fmt: skip
            wait_until(lambda: len(cluster.replica_ports()) == 2, 30, "the old primary to rejoin")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
