"""Every actor on the real broker over fakeredis, with no servers: what each does with a good
message, a malformed one, one whose data fails, and a database that is away.

The database is a stand-in that counts transactions and commits only those that end without an
error; the jobs functions the actors call are recorders. So these tests check the actors' own part
(parse the payload, one transaction, follow-up messages, narrowing, dead letters, retries); the
integration tests run the same actors against PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import dramatiq
import fakeredis
import pytest
import sqlalchemy as sa

from db.derived_jobs import DERIVED_JOBS
from jobs import deltas as delta_jobs
from jobs import recompute as recompute_jobs
from jobs import store as store_jobs
from jobs.deltas import ApplyResult
from jobs.recompute import RecomputeResult
from jobs.store import StoreResult
from worker.runtime import actors, outbox, redis_keys
from worker.runtime.actors import declare_actors
from worker.runtime.broker import make_broker
from worker.runtime.deadletters import list_dead_letters
from worker.runtime.messages import (
    HEARTBEATS_QUEUE,
    RECOMPUTE_QUEUE,
    recompute_message,
    store_message,
    update_message,
)
from worker.runtime.redis_keys import Keys
from worker.settings import Settings

NOW = time.time()
DAY = dt.date(2024, 1, 2)


def heartbeat(user: str = "ann", offset: float = 0.0) -> dict:
    return {
        "user_id": user,
        "entity": "/src/app.py",
        "type": "file",
        "time": NOW - 3600 + offset,
        "project": "web",
    }


class Database:
    """Stands for PostgreSQL: counts the transactions begun, and commits those that end cleanly."""

    def __init__(self) -> None:
        self.begun = self.committed = 0

    @contextlib.contextmanager
    def begin(self):
        self.begun += 1
        yield object()
        self.committed += 1

    @contextlib.contextmanager
    def connect(self):
        yield object()


class Recorder:
    """A jobs function: records each call's arguments and answers with the next of `answers` (an
    exception is raised; a callable is called with the arguments)."""

    def __init__(self, *answers) -> None:
        self.calls: list[tuple] = []
        self.answers = list(answers)

    def __call__(self, *args, **kwargs):
        self.calls.append((*args[1:], kwargs))  # (without the connection)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if callable(answer) and not isinstance(answer, type):
            answer = answer(*args[1:], **kwargs)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def settings() -> Settings:
    return Settings(
        **{"DATABASE_URL": "postgresql://unit@127.0.0.1:1/unit", "REDIS_URL": "redis://127.0.0.1:1/0"},
        redis_namespace="unit",
        min_backoff_ms=10,
        max_backoff_ms=20,
        max_retries=3,
        store_linger_ms=0,
        recompute_delay_ms=0,
        recompute_keys_per_message=10,
        threads=1,
    )


@pytest.fixture
def database() -> Database:
    return Database()


@pytest.fixture
def broker(settings, database):
    broker = make_broker(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    declare_actors(broker, settings, engine=lambda: database)
    return broker


def run(broker, queue: str, timeout: float = 20.0) -> None:
    """Consume `queue` (and its retries) with one worker thread until nothing is left on it."""
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=20)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not redis_keys.queues_empty(broker, [queue]):
            assert time.monotonic() < deadline, f"{queue} did not drain"
            time.sleep(0.02)
    finally:
        worker.stop()


def dead(broker, queue: str) -> list:
    return list_dead_letters(broker, [queue])


def waiting(broker, queue: str) -> list[dramatiq.Message]:
    raw = broker.client.hvals(Keys(broker.namespace).messages(queue))
    return [dramatiq.Message.decode(data) for data in raw]


# -- store_heartbeats ---------------------------------------------------------------------------


@pytest.fixture
def store(monkeypatch) -> Recorder:
    recorder = Recorder(lambda heartbeats, timeout_us: StoreResult(len(heartbeats), len(heartbeats)))
    monkeypatch.setattr(store_jobs, "store_heartbeats", recorder)
    return recorder


def test_store_commits_every_heartbeat_and_wakes_each_derived_job_once(broker, database, store):
    for n in range(3):
        broker.enqueue(store_message([heartbeat(offset=n), heartbeat("bob", offset=n)]))
    run(broker, HEARTBEATS_QUEUE)
    stored = [hb for heartbeats, _ in store.calls for hb in heartbeats]
    assert sorted((hb["user_id"], hb["time"]) for hb in stored) == sorted(
        (user, NOW - 3600 + n) for n in range(3) for user in ("ann", "bob")
    )
    assert database.committed == database.begun == len(store.calls)
    assert dead(broker, HEARTBEATS_QUEUE) == []
    for job in DERIVED_JOBS:  # one wake per job, however many stores committed meanwhile
        assert [(m.actor_name, m.kwargs) for m in waiting(broker, job.queue)] == [(job.actor, {})]


def test_a_malformed_store_message_is_dead_lettered_at_once(broker, database, store):
    message = broker.enqueue(
        dramatiq.Message(
            queue_name=HEARTBEATS_QUEUE, actor_name="store_heartbeats", args=("x",), kwargs={}, options={}
        )
    )
    run(broker, HEARTBEATS_QUEUE)
    [letter] = dead(broker, HEARTBEATS_QUEUE)
    assert (letter.message_id, letter.retries) == (message.message_id, 0)
    assert "PoisonMessage" in letter.error
    assert store.calls == [] and database.begun == 0


def test_valid_heartbeats_are_stored_and_their_message_dead_lettered_with_the_reason(broker, store):
    broker.enqueue(store_message([heartbeat(), {"user_id": "ann", "time": NOW}, heartbeat(offset=1)]))
    run(broker, HEARTBEATS_QUEUE)
    [(heartbeats, _)] = store.calls
    assert [hb["time"] for hb in heartbeats] == [NOW - 3600, NOW - 3599]
    [letter] = dead(broker, HEARTBEATS_QUEUE)
    assert "1 invalid heartbeat(s): item 1" in letter.error and letter.retries == 0


def test_a_database_away_is_retried_and_the_batch_stored_once_it_is_back(broker, database, monkeypatch):
    recorder = Recorder(sa.exc.DisconnectionError("away"), StoreResult(1, 1))
    monkeypatch.setattr(store_jobs, "store_heartbeats", recorder)
    broker.enqueue(store_message([heartbeat()]))
    run(broker, HEARTBEATS_QUEUE)
    assert len(recorder.calls) == 2 and (database.begun, database.committed) == (2, 1)
    assert dead(broker, HEARTBEATS_QUEUE) == []


# -- update_projects, update_languages, update_user_agents --------------------------------------


@pytest.mark.parametrize("job", DERIVED_JOBS, ids=lambda job: job.actor)
def test_an_update_applies_batches_until_none_are_left(broker, database, monkeypatch, job):
    recorder = Recorder(ApplyResult(["ann", "bob"], 5, more=True), ApplyResult(["cid"], 1, more=False))
    monkeypatch.setattr(delta_jobs, "apply", recorder)
    broker.client.set(Keys(broker.namespace).wake(job.name), 1)
    broker.enqueue(update_message(job.name))
    run(broker, job.queue)
    assert recorder.calls == [(job.name, {"users": None})] * 2
    assert database.committed == 2
    assert not broker.client.exists(Keys(broker.namespace).wake(job.name))  # later stores wake it again


@pytest.mark.parametrize("job", DERIVED_JOBS, ids=lambda job: job.actor)
def test_a_batch_failing_for_its_data_is_narrowed_and_the_failing_user_set_aside(broker, monkeypatch, job):
    def apply(job_name, users):
        if users is None or "bob" in users:
            return ValueError("value out of range")
        return ApplyResult(users, 1)

    recorder, set_aside = Recorder(apply), Recorder(None)
    monkeypatch.setattr(delta_jobs, "apply", recorder)
    monkeypatch.setattr(delta_jobs, "set_aside", set_aside)
    monkeypatch.setattr(actors, "select_delta_users", lambda conn, job, limit: {"ann": 3, "bob": 1})
    broker.enqueue(update_message(job.name))
    run(broker, job.queue)
    assert sorted(str(kwargs["users"]) for _, kwargs in recorder.calls) == ["None", "['ann']", "['bob']"]
    [(job_name, users, reason, _)] = set_aside.calls
    assert (job_name, users) == (job.name, ["bob"]) and "value out of range" in reason
    [letter] = dead(broker, job.queue)
    assert f"{job.name} of user 'bob' fails by itself" in letter.error and letter.retries == 0


# -- recompute_days -----------------------------------------------------------------------------


def test_a_recompute_sends_the_days_marked_stale_again_meanwhile(broker, monkeypatch):
    again = [("ann", DAY + dt.timedelta(days=1))]
    recorder = Recorder(RecomputeResult([("ann", DAY)], rerun=again, changed=2), RecomputeResult(again))
    marked = Recorder(None)
    monkeypatch.setattr(recompute_jobs, "recompute", recorder)
    monkeypatch.setattr(outbox.db_stale, "mark_enqueued", marked)
    broker.enqueue(recompute_message([("ann", DAY)]))
    run(broker, RECOMPUTE_QUEUE)
    assert [keys for keys, _ in recorder.calls] == [[("ann", DAY)], again]
    assert [args for *args, _ in marked.calls] == [[again]]
    assert dead(broker, RECOMPUTE_QUEUE) == []


def test_a_recompute_message_with_a_bad_date_is_dead_lettered_at_once(broker, monkeypatch):
    recorder = Recorder(RecomputeResult())
    monkeypatch.setattr(recompute_jobs, "recompute", recorder)
    args = ([["ann", "yesterday"]],)
    broker.enqueue(dramatiq.Message(queue_name=RECOMPUTE_QUEUE, actor_name="recompute_days", args=args, kwargs={},
                                    options={}))  # fmt: skip
    run(broker, RECOMPUTE_QUEUE)
    [letter] = dead(broker, RECOMPUTE_QUEUE)
    assert "PoisonMessage" in letter.error and recorder.calls == []


def test_a_failing_user_day_is_narrowed_down_and_set_aside_alone(broker, monkeypatch):
    def recompute(keys, **kwargs):
        return ValueError("division by zero") if ("bob", DAY) in keys else RecomputeResult(list(keys))

    recorder, set_aside = Recorder(recompute), Recorder(None)
    monkeypatch.setattr(recompute_jobs, "recompute", recorder)
    monkeypatch.setattr(recompute_jobs, "set_aside", set_aside)
    broker.enqueue(recompute_message([("ann", DAY), ("bob", DAY), ("bob", DAY + dt.timedelta(days=1))]))
    run(broker, RECOMPUTE_QUEUE)
    assert [(keys, reason[:30]) for keys, reason, _ in set_aside.calls] == [
        ([("bob", DAY)], "ValueError: division by zero")
    ]
    done = [keys for keys, _ in recorder.calls if ("bob", DAY) not in keys]
    assert sorted(key for keys in done for key in keys) == [("ann", DAY), ("bob", DAY + dt.timedelta(days=1))]
    [letter] = dead(broker, RECOMPUTE_QUEUE)
    assert "recomputing user 'bob' on 2024-01-02 fails by itself" in letter.error
