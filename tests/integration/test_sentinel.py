"""Redis with Sentinel (issue #19, item 2): the primary is killed while producers enqueue and a
worker stores; they and `hbw serve` follow the failover by themselves, and with HBW_REDIS_WAIT_REPLICAS=1 no
acknowledged enqueue is lost: the tables equal the reference of the whole stream. Without WAIT,
an enqueue the replicas had not received when the primary died is acknowledged, then lost."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import redis

from jobs.keys import create_key
from tests import reference, streams
from tests.conftest import worker_process
from tests.integration.test_cli import hbw
from tests.sentinel import MASTER, sentinel_cluster, wait_until
from tests.tables import diff, snapshot
from tests.web_client import BULK, basic, post, serve
from worker.http.app import create_app
from worker.producer import EnqueueError, enqueue_heartbeats
from worker.runtime.broker import NotReplicated, make_broker

pytestmark = [pytest.mark.slow, pytest.mark.sentinel]


def test_producers_and_workers_follow_a_failover_and_lose_nothing_acknowledged(db, settings, database_url):
    stream = streams.generate(seed=29, users=5, days=3, invalid_share=0.0)
    chunks = [stream.valid[i : i + 40] for i in range(0, len(stream.valid), 40)]
    with sentinel_cluster(replicas=2) as cluster:  # WAIT 1 still answered once one has failed
        env = {"REDIS_URL": f"redis://{MASTER}/0", "REDIS_SENTINELS": cluster.sentinels,
               "HBW_REDIS_WAIT_REPLICAS": "1"}  # fmt: skip
        sentinel = settings.model_copy(
            update={
                "redis_url": env["REDIS_URL"],
                "redis_sentinels": cluster.sentinels,
                "redis_wait_replicas": 1,
            }
        )
        producer = make_broker(sentinel)
        acknowledged: list[float] = []  # when each chunk was acknowledged
        refusals: list[BaseException] = []

        def produce() -> None:
            for chunk in chunks:
                while True:
                    try:
                        enqueue_heartbeats(chunk, batch_size=20, broker=producer)
                        break
                    except EnqueueError as e:  # as a client told 503: send it all again later
                        refusals.append(e.cause)
                        time.sleep(0.05)
                acknowledged.append(time.monotonic())
                time.sleep(0.01)

        user_id = stream.valid[0]["user_id"]
        with db.begin() as conn:
            auth = basic(create_key(conn, user_id))
        posted = [
            {k: v for k, v in hb.items() if k != "user_id"} for hb in stream.valid if hb["user_id"] == user_id
        ]
        web = contextlib.contextmanager(serve)(create_app(sentinel, broker=producer), sentinel)
        with worker_process(database_url, env=env), web as url:
            thread = threading.Thread(target=produce)
            thread.start()
            wait_until(lambda: len(acknowledged) >= len(chunks) // 3, 60, "a third of the stream")
            old = cluster.master_port()
            killed = time.monotonic()
            cluster.kill(old)
            wait_until(lambda: cluster.failed_over(old), 30, "the sentinels to fail over")
            failover = time.monotonic() - killed
            cluster.restart(old)  # as its supervisor would; the sentinels make it a replica
            wait_until(
                lambda: post(url + BULK, posted[:25], auth)[0] == 201, 30, "hbw serve to enqueue again"
            )
            thread.join(120)
            assert not thread.is_alive()
            drained = hbw("worker", "--burst", "-p", "1", env=env)
            assert drained.returncode == 0, drained.stderr.decode()[-3000:]
        outage = min(t for t in acknowledged if t > killed) - killed
        print(f"failover {failover:.2f} s; producer waited {outage:.2f} s; {len(refusals)} refusals")
        assert failover < 10
        assert refusals and all(isinstance(e, redis.RedisError) for e in refusals)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []


def test_an_enqueue_no_replica_holds_is_refused_with_wait_and_lost_without(settings):
    """The replica is stopped and its link cut (as far behind as a replica can be), two enqueues
    reach the primary, which is killed; the sentinels promote the replica. Without WAIT the first enqueue
    was acknowledged and is gone; with WAIT 1 the second was refused, so its producer still has it."""
    with sentinel_cluster(replicas=1) as cluster:
        sentinel = settings.model_copy(
            update={"redis_url": f"redis://{MASTER}/0", "redis_sentinels": cluster.sentinels}
        )
        plain = make_broker(sentinel)
        waiting = make_broker(
            sentinel.model_copy(update={"redis_wait_replicas": 1, "redis_wait_timeout_ms": 300})
        )
        queue = f"{sentinel.redis_namespace}:heartbeats"
        [replica] = cluster.replica_ports()
        old = cluster.master_port()
        cluster.pause(replica)
        redis.Redis(port=old).client_kill_filter(_type="replica")  # and its link is cut: it gets nothing more
        try:
            first, second = (streams.generate(seed=seed, users=1, days=1).valid[:5] for seed in (1, 2))
            assert enqueue_heartbeats(first, batch_size=5, broker=plain).enqueued == 5  # acknowledged
            with pytest.raises(EnqueueError) as refused:
                enqueue_heartbeats(second, batch_size=5, broker=waiting)
            assert isinstance(refused.value.cause, NotReplicated)
            assert redis.Redis(port=old).llen(queue) == 2  # both on the primary
            cluster.kill(old)
        finally:
            cluster.pause(replica, paused=False)
        wait_until(lambda: cluster.failed_over(old), 30, "the sentinels to fail over")
        assert redis.Redis(port=cluster.master_port()).llen(queue) == 0  # the acknowledged one is lost
