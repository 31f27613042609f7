"""Group commit of `hbw serve` (worker.http.groups), driven directly from one event loop: what
goes into a message, when a group closes, who is told what when Redis fails, and which thread
talks to Redis. The same over real HTTP is in tests/integration/test_web_groups.py."""

from __future__ import annotations

import asyncio
import threading
import time

import fakeredis
import pytest
import redis

from worker.http.groups import IngestGroups, Unavailable
from worker.http.ratelimit import Budgets, RateLimited
from worker.runtime.messages import HEARTBEATS_QUEUE, STORE_ACTOR


class Broker:
    """Records what is enqueued, and from which thread; `fail` says which enqueue calls (by
    number, from 1) raise as a lost Redis would."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.messages: list = []
        self.threads: set[str] = set()
        self.fail, self.calls = fail or set(), 0

    def enqueue(self, message) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        if self.calls in self.fail:
            raise redis.ConnectionError("Connection refused")
        self.messages.append(message)

    def carried(self) -> list[str]:
        return [hb["entity"] for message in self.messages for hb in message.args[0]]


class Unlimited:
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def check_many(self, requests):
        self.threads.add(threading.current_thread().name)
        return [None] * len(requests)


def requests_of(sizes: list[int]) -> list[list[dict]]:
    """Heartbeats of one request per size, each entity unique ("r<request>-<item>")."""
    return [[{"entity": f"r{r}-{i}", "time": 1.7e9 + i} for i in range(n)] for r, n in enumerate(sizes)]


def submit_all(groups: IngestGroups, requests: list[list[dict]]) -> list:
    """Submit every request at once from one loop; each one's batch id or the exception it raised."""

    async def run():
        calls = [groups.submit(bytes([r % 256]) * 32, "10.0.0.1", hbs) for r, hbs in enumerate(requests)]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(run())


SIZES = [1 + (r * 7) % 25 for r in range(50)]  # 1-25 heartbeats each, 643 in all


def test_concurrent_requests_share_messages_and_every_heartbeat_is_carried_once():
    broker, budgets = Broker(), Unlimited()
    groups = IngestGroups(broker, budgets, batch_size=100, window_ms=50)
    requests = requests_of(SIZES)
    outcomes = submit_all(groups, requests)

    assert len(broker.messages) < len(requests)
    assert len(broker.messages) == 8  # 643 heartbeats in groups of whole requests up to 100
    assert sorted(broker.carried()) == sorted(hb["entity"] for hbs in requests for hb in hbs)
    for message in broker.messages:
        assert (message.queue_name, message.actor_name) == (HEARTBEATS_QUEUE, STORE_ACTOR)
        assert 0 < len(message.args[0]) <= 100
    # a request's heartbeats travel together, in the message whose batch id it was given
    by_entity = {hb["entity"]: m.options["batch_id"] for m in broker.messages for hb in m.args[0]}
    for hbs, batch_id in zip(requests, outcomes, strict=True):
        assert {by_entity[hb["entity"]] for hb in hbs} == {batch_id}
    # and the Redis work was done by one thread, never the event loop's
    assert broker.threads == budgets.threads == {"hbw-ingest-groups_0"}


def test_a_group_closes_when_its_first_request_has_waited_the_window():
    broker = Broker()
    groups = IngestGroups(broker, Unlimited(), batch_size=1000, window_ms=100)
    first, second = requests_of([3] * 6)[:3], requests_of([3] * 6)[3:]

    async def run():
        early = [asyncio.create_task(groups.submit(b"k" * 32, "a", hbs)) for hbs in first]
        await asyncio.sleep(0.05)  # within the first one's window: rides along
        early.append(asyncio.create_task(groups.submit(b"k" * 32, "a", second[0])))
        started = time.monotonic()
        await asyncio.gather(*early)
        waited = time.monotonic() - started
        await asyncio.sleep(0.2)  # past it: a group of their own
        late = [groups.submit(b"k" * 32, "a", hbs) for hbs in second[1:]]
        return waited, await asyncio.gather(*late)

    waited, _ = asyncio.run(run())
    assert waited < 0.1  # the window counts from the group's first request, not its last
    assert [len(m.args[0]) for m in broker.messages] == [12, 6]


def test_a_group_closes_at_the_batch_size_without_waiting_for_the_window():
    broker = Broker()
    groups = IngestGroups(broker, Unlimited(), batch_size=50, window_ms=60_000)
    started = time.monotonic()
    submit_all(groups, requests_of([25, 25, 25, 25]))
    assert time.monotonic() - started < 30  # the window (60 s) was never waited for
    assert [len(m.args[0]) for m in broker.messages] == [50, 50]


def test_a_request_larger_than_the_batch_size_is_a_group_alone_split_like_the_producer_splits():
    broker = Broker()
    groups = IngestGroups(broker, Unlimited(), batch_size=30, window_ms=50)
    outcomes = submit_all(groups, requests_of([5, 70, 5]))
    sizes = [len(m.args[0]) for m in broker.messages]
    assert sizes == [5, 30, 30, 10, 5]  # the small ones never ride with it
    big = [m for m in broker.messages if m.args[0][0]["entity"].startswith("r1-")]
    assert len(big) == 3 and {m.options["batch_id"] for m in big} == {outcomes[1]}


def test_window_zero_keeps_one_message_per_request():
    broker = Broker()
    groups = IngestGroups(broker, Unlimited(), batch_size=1000, window_ms=0)
    requests = requests_of(SIZES[:20])
    outcomes = submit_all(groups, requests)
    assert len(broker.messages) == 20
    assert sorted(len(m.args[0]) for m in broker.messages) == sorted(SIZES[:20])
    assert len(set(outcomes)) == 20
    assert threading.main_thread().name not in broker.threads  # Starlette's thread pool, not the loop


def test_a_failed_enqueue_refuses_its_whole_group_and_nobody_else():
    broker = Broker(fail={2})  # the second group's message is lost
    groups = IngestGroups(broker, Unlimited(), batch_size=100, window_ms=50)
    requests = requests_of(SIZES)
    outcomes = submit_all(groups, requests)

    refused = [r for r, outcome in enumerate(outcomes) if isinstance(outcome, Unavailable)]
    answered = [r for r, outcome in enumerate(outcomes) if isinstance(outcome, str)]
    assert refused and answered and len(refused) + len(answered) == len(requests)
    assert len(broker.messages) == 7
    # every heartbeat carried belongs to an answered request, and every answered request's are
    assert sorted(broker.carried()) == sorted(hb["entity"] for r in answered for hb in requests[r])
    assert sum(len(requests[r]) for r in refused) <= 100


def test_the_budgets_are_counted_in_one_round_trip_and_a_refused_request_queues_nothing():
    client = fakeredis.FakeRedis()
    budgets = Budgets(client, "t", per_key_per_minute=3, auth_failures_per_minute=2)
    client.set("t:hbw.authfail:10.0.0.9", 3, ex=60)  # this address has used up its failures
    round_trips = []
    execute = redis.client.Pipeline.execute

    def counted(pipe, *args, **kwargs):
        round_trips.append(len(pipe.command_stack))
        return execute(pipe, *args, **kwargs)

    broker = Broker()
    groups = IngestGroups(broker, budgets, batch_size=1000, window_ms=50)
    requests = requests_of([2] * 6)

    async def run():
        key = b"k" * 32
        calls = [groups.submit(key, "10.0.0.1", hbs) for hbs in requests[:5]]
        calls.append(groups.submit(b"o" * 32, "10.0.0.9", requests[5]))
        return await asyncio.gather(*calls, return_exceptions=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", counted)
        outcomes = asyncio.run(run())

    assert round_trips == [6 * 4]  # INCR, EXPIRE, GET, TTL per request, in one pipeline
    assert [type(o).__name__ for o in outcomes] == ["str"] * 3 + ["RateLimited"] * 3
    assert "rate limit" in outcomes[3].message and "failed authentications" in outcomes[5].message
    assert isinstance(outcomes[5], RateLimited) and 1 <= outcomes[5].retry_after <= 60
    assert sorted(broker.carried()) == sorted(hb["entity"] for hbs in requests[:3] for hb in hbs)


def test_a_request_cancelled_while_waiting_does_not_stop_the_others():
    broker = Broker()
    groups = IngestGroups(broker, Unlimited(), batch_size=1000, window_ms=100)
    requests = requests_of([3, 3, 3])

    async def run():
        tasks = [asyncio.create_task(groups.submit(b"k" * 32, "a", hbs)) for hbs in requests]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[0], str) and outcomes[0] == outcomes[2]
