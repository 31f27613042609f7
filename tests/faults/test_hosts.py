"""Worker hosts as network namespaces (tests/netns.py): PostgreSQL and Redis in a server namespace,
three hosts running `hbw worker`, and a whole host SIGKILLed, cut off the network while its workers
keep running, or its clock skewed by +/-60 s while a stream is processed. Every run: the queues
drain, nothing is dead-lettered, the tables equal the reference and `hbw verify` finds no drift; a
dead or cut-off host's messages are rescued within docs/reliability.md's bound; nobody is taken for
dead for a skewed clock. Alone: `python -m pytest -m hosts` (as root; skipped where impossible).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from db.engine import create_engine
from tests import reference, streams
from tests.conftest import truncate_all
from tests.faults.conftest import FAST, TALLY, FaultEnv, stop
from tests.netns import Cluster, cluster, ip
from worker.runtime.broker import make_broker
from worker.runtime.liveness import read_workers
from worker.runtime.messages import QUEUES
from worker.runtime.redis_keys import Keys, queues_empty
from worker.settings import Settings

pytestmark = pytest.mark.hosts

TIMEOUT = int(FAST["HBW_WORKER_HEARTBEAT_TIMEOUT_MS"]) / 1000
#: docs/reliability.md: a dead worker's messages are back on their queue within this.
BOUND = TIMEOUT + max(int(FAST["HBW_MAINTENANCE_INTERVAL_MS"]) / 1000, 1.0)
SLACK = 0.5  # scheduling on a busy 2-CPU machine running three hosts, PostgreSQL and Redis

REACH = """
import sys, psycopg, redis
try:
    psycopg.connect(sys.argv[1], connect_timeout=2).execute("SELECT 1")
    redis.Redis.from_url(sys.argv[2], socket_timeout=2, socket_connect_timeout=2).ping()
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
"""


def reaches(lab: Cluster, host: str) -> bool:
    """Whether a new process on `host` reaches PostgreSQL and Redis (2 s each at most)."""
    proc = lab.net.run(host, [sys.executable, "-c", REACH, lab.database_url, lab.redis_url],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    proc.communicate(timeout=30)
    return proc.returncode == 0


def test_a_host_reaches_the_servers_until_it_is_cut_off():
    with cluster(hosts=1) as lab:
        [host] = lab.net.hosts
        assert reaches(lab, host)
        lab.net.cut(host)
        started = time.monotonic()
        assert not reaches(lab, host)
        assert time.monotonic() - started < 10
        lab.net.mend(host)
        assert reaches(lab, host)


@contextlib.contextmanager
def hosts(
    count: int, *, faketime: dict[int, str] | None = None, start: bool = True
) -> Iterator[tuple[Cluster, FaultEnv]]:
    """A cluster with `count` hosts, `hbw worker` on each unless not `start` (host i under
    libfaketime with ``faketime[i]``), and the fault suite's producer and checks (tests/faults/conftest.py) in this
    process, which reaches the servers through the root namespace's link."""
    with cluster(count) as lab:
        lab.namespace = "hbw-faults"  # the private Redis's only user; FaultEnv's checks read it
        settings = Settings(
            DATABASE_URL=lab.database_url, REDIS_URL=lab.redis_url, redis_namespace=lab.namespace
        )
        env = FaultEnv(None, None, lab.env(FAST), settings, create_engine(lab.database_url, pool_size=2),
                       make_broker(settings), lab.workdir)  # fmt: skip
        try:
            lab.workers = [lab.start_worker(h, env_extra=FAST, faketime=(faketime or {}).get(i))
                           for i, h in enumerate(lab.net.hosts) if start]  # fmt: skip
            yield lab, env
        finally:
            env.engine.dispose()
            env.broker.client.close()


def worker_ids(lab: Cluster, env: FaultEnv, host: str) -> set[str]:
    """The Dramatiq worker ids of `host`'s worker processes (by the pids their beats publish)."""
    pids = {int(pid) for pid in ip("netns", "pids", host).split()}
    health = env.broker.client.hgetall(Keys(lab.namespace).worker_health)
    return {worker.decode() for worker, record in health.items() if json.loads(record).get("pid") in pids}


def held(env: FaultEnv, workers: set[str]) -> int:
    """Messages these workers hold: fetched (running, prefetched, delayed), not acked."""
    client = env.broker.client
    keys = [key for worker in workers for key in client.scan_iter(match=f"hbw-faults:__acks__.{worker}.*")]
    return sum(client.scard(key) for key in keys)


def stored(env: FaultEnv) -> int:
    with env.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM heartbeats")).scalar_one()


def freeze(lab: Cluster, host: str, *, thaw: bool = False) -> None:
    """SIGSTOP (or SIGCONT) every process of `host`: while frozen, what it holds cannot change."""
    for proc in lab.net.procs[host]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT if thaw else signal.SIGSTOP)


def take_victim(lab: Cluster, env: FaultEnv, host: str, at_least: int) -> set[str]:
    """Once `at_least` heartbeats are stored, `host` frozen at a moment it holds messages (thaw it
    after the fault): the ids of its workers."""
    victims, deadline = set(), time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"{host} never took any work\n{env.diagnose()}"
        victims = victims or worker_ids(lab, env, host)
        if victims and stored(env) >= at_least and held(env, victims):
            freeze(lab, host)
            if held(env, victims):
                return victims
            freeze(lab, host, thaw=True)
        time.sleep(0.01)


def rescued_after(env: FaultEnv, victims: set[str], since: float) -> float:
    """Seconds from `since` until nothing is held by `victims` (their messages are rescued)."""
    while held(env, victims):
        assert time.monotonic() - since < 4 * BOUND, f"never rescued\n{env.diagnose()}"
        time.sleep(0.02)
    return time.monotonic() - since


def finished(lab: Cluster) -> tuple[int, dict[str, set[str]]]:
    """From the messages' summary lines (worker.runtime.middleware.MessageLog): the heartbeats the
    store messages received in all, and which hosts finished each message."""
    received, hosts_of = 0, {}
    for log in lab.workdir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"message.done"' in line:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    received += record.get("received", 0)
                    hosts_of.setdefault(record["message_id"], set()).add(log.name.split("-")[1])
    return received, hosts_of


def finish(lab: Cluster, env: FaultEnv, stream: streams.Stream, *, killed: set = frozenset()) -> None:
    """Drain, stop every live worker gracefully (exit 0), then compare with the reference."""
    env.wait_drained(timeout=180)
    for i, proc in enumerate(lab.workers):
        if lab.net.hosts[i] not in killed:
            assert stop(proc) == 0, f"{lab.net.hosts[i]} did not stop cleanly\n{env.diagnose()}"
    code, out = lab.hbw(lab.net.hosts[0], "verify")
    assert code == 0, out
    env.assert_converged(stream)


def test_a_host_killed_mid_stream():
    stream = streams.generate(seed=61, users=8, days=4, invalid_share=0.01)
    with hosts(3) as (lab, env):
        victim, rng = lab.net.hosts[1], random.Random(61)
        producer = threading.Thread(target=env.deliver, args=(stream.items, rng), kwargs={"pause": 0.2})
        producer.start()
        try:
            workers = take_victim(lab, env, victim, at_least=500)
            killed_at = time.monotonic()
            lab.net.kill_host(victim)
            holding = held(env, workers)
            rescue = rescued_after(env, workers, killed_at)
        finally:
            producer.join()
        TALLY["hosts SIGKILLed (every process)"] += 1
        print(f"host SIGKILLed holding {holding} messages: rescued after {rescue:.2f} s (bound {BOUND} s)")
        assert holding > 0 and rescue <= BOUND + SLACK, rescue
        finish(lab, env, stream, killed={victim})


def test_a_host_cut_off_keeps_running_and_comes_back():
    stream = streams.generate(seed=62, users=8, days=4, invalid_share=0.01)
    first, second = stream.items[: len(stream.items) // 2], stream.items[len(stream.items) // 2 :]
    with hosts(3) as (lab, env):
        victim, rng = lab.net.hosts[1], random.Random(62)
        producer = threading.Thread(target=env.deliver, args=(first, rng), kwargs={"pause": 0.2})
        producer.start()
        try:
            workers = take_victim(lab, env, victim, at_least=300)
            cut_at = time.monotonic()
            lab.net.cut(victim)
            holding = held(env, workers)
            freeze(lab, victim, thaw=True)  # its workers keep running, cut off
            rescue = rescued_after(env, workers, cut_at)
            time.sleep(max(0.0, 2 * TIMEOUT - (time.monotonic() - cut_at)))  # its connections hang meanwhile
            cut_for = time.monotonic() - cut_at
            lab.net.mend(victim)
        finally:
            producer.join()
        TALLY["hosts cut off and mended"] += 1
        print(f"host cut off for {cut_for:.1f} s holding {holding} messages: rescued after {rescue:.2f} s")
        assert holding > 0 and rescue <= BOUND + SLACK, rescue
        # it comes back: its workers never stopped, take part in the rest of the stream, beat again
        log = lab.workers[1].log
        done_before = log.read_text().count('"message.done"')
        env.deliver(second, rng, pause=0.2)
        for again in streams.random_batches(rng, stream.items, high=100):  # sent again: changes nothing
            if log.read_text().count('"message.done"') > done_before:
                break
            env.deliver(again, rng, pause=0.2)
        else:
            pytest.fail(f"it took no work back\n{env.diagnose()}")
        assert workers <= set(read_workers(env.broker, int(TIMEOUT * 1000)).alive), env.diagnose()
        finish(lab, env, stream)
        twice = sum(len(where) > 1 for where in finished(lab)[1].values())
        print(f"messages finished on two hosts (rescued, then finished by the cut-off one too): {twice}")


@pytest.mark.parametrize("skew", ["+60s", "-60s"])
def test_a_host_clock_skewed(skew):
    stream = streams.generate(seed=64, users=6, days=3, invalid_share=0.01)
    with hosts(3, faketime={1: skew}) as (lab, env):
        seen, done = {"fewest alive": 3, "dead": 0, "oldest beat": 0.0}, threading.Event()

        def watch() -> None:  # what maintenance judges: beats on Redis's clock (worker.runtime.liveness)
            pipe, keys = env.broker.client.pipeline(transaction=False), Keys(lab.namespace)
            while not done.wait(0.05):
                workers = read_workers(env.broker, int(TIMEOUT * 1000))
                pipe.time().zrange(keys.heartbeats, 0, -1, withscores=True).zrange(keys.workers, 0, -1)
                (seconds, micros), beats, registered = pipe.execute()
                now, beats = seconds * 1000 + micros / 1000, dict(beats)
                oldest = max((now - beats.get(worker, 0)) / 1000 for worker in registered)
                seen["fewest alive"] = min(seen["fewest alive"], len(workers.alive))
                seen["dead"] = max(seen["dead"], workers.dead)
                seen["oldest beat"] = max(seen["oldest beat"], round(oldest, 2))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            started = time.monotonic()
            env.deliver(stream.items, random.Random(64), pause=0.05)
            stored_s, derived_s, empty_s = caught_up(env, stream, started)
        finally:
            done.set()
            watcher.join()
        finish(lab, env, stream)
        TALLY["hosts with a skewed clock (libfaketime)"] += 1
        print(f"clock {skew}: stored after {stored_s:.1f} s, derived tables caught up after {derived_s:.1f} s,"
              f" queues empty after {empty_s:.1f} s; liveness seen: {seen}")  # fmt: skip
        # nobody taken for dead: every beat fresh, never a message delivered twice
        assert (seen["fewest alive"], seen["dead"]) == (3, 0) and seen["oldest beat"] < TIMEOUT / 2, seen
        assert finished(lab)[0] == len(stream.valid)
        assert empty_s - stored_s < 30, (stored_s, derived_s, empty_s)  # no wake held for the skew


def caught_up(env: FaultEnv, stream: streams.Stream, since: float, timeout: float = 180) -> list[float]:
    """Seconds after `since` until every heartbeat was stored, until the derived tables had caught
    up too, and until moreover every queue was empty (polling closely)."""
    distinct, times = len(reference.compute(stream.valid).heartbeats), []
    while len(times) < 3:
        assert time.monotonic() - since < timeout, f"not caught up in {timeout} s\n{env.diagnose()}"
        with env.engine.connect() as conn:
            rows, pending = conn.execute(sa.text("SELECT (SELECT count(*) FROM heartbeats), (SELECT count(*) "
                                                 "FROM stale_days) + (SELECT count(*) FROM derived_deltas)")).one()  # fmt: skip
        done = [rows >= distinct, not pending, queues_empty(env.broker, QUEUES)]
        while len(times) < 3 and all(done[: len(times) + 1]):
            times.append(time.monotonic() - since)
        time.sleep(0.05)
    return times


def test_throughput_with_1_2_3_hosts():
    """Not a benchmark (two CPUs run every host and both servers): numbers for the README."""
    stream, rows = streams.generate(seed=65, users=40, days=7, invalid_share=0.0), []
    with hosts(3, start=False) as (lab, env):
        for count in (1, 2, 3):
            with env.engine.begin() as conn:
                truncate_all(conn)
            env.broker.client.flushall()
            lab.workers = [lab.start_worker(h, env_extra=FAST) for h in lab.net.hosts[:count]]
            started = time.monotonic()
            env.deliver(stream.items, random.Random(65))
            enqueued = time.monotonic() - started
            rows.append((count, enqueued, *caught_up(env, stream, started)))
            finish(lab, env, stream)
    print(f"\n{len(stream.valid)} heartbeats enqueued at once; `hbw worker -p 1 -t 2` on each host")
    print("hosts  enqueued (s)  stored (s)  derived (s)  heartbeats/s")
    for count, enqueued, stored_s, derived_s, _ in rows:
        rate = len(stream.valid) / derived_s
        print(f"{count:5}  {enqueued:12.2f}  {stored_s:10.2f}  {derived_s:11.2f}  {rate:12.0f}")
