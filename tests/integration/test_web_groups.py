"""Group commit of `hbw serve` over real HTTP (worker.http.groups): 50 plugins posting at once share
store messages, every heartbeat is queued and stored exactly once with each response's per-item
statuses right, a lost message is a 503 for exactly the requests it carried, and a window of 0
keeps one message per request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator

import orjson
import pytest
import redis
import sqlalchemy as sa

from jobs.keys import create_key
from tests.conftest import drain
from tests.web_client import BULK, basic, serve
from worker.http.app import create_app

REQUESTS = 50


@pytest.fixture
def web(db, broker, settings, request) -> Iterator[str]:
    """The ingest app on a free port with the settings of an indirect parameter (a dict)."""
    settings = settings.model_copy(update=request.param)
    yield from serve(create_app(settings, broker=broker, engine=db), settings)


@pytest.fixture
def keys(db) -> list[str]:
    """One API key per request, each its own user (as 50 plugins)."""
    with db.begin() as conn:
        return [create_key(conn, f"user-{r}") for r in range(REQUESTS)]


def bodies() -> list[list[dict]]:
    """Request r posts 1-25 items; every fourth item has no entity (400), the rest are valid."""
    t = time.time() - 3600
    return [
        [{"time": t + i} if i % 4 == 3 else {"entity": f"r{r}-{i}.py", "time": t + i, "project": "p"}
         for i in range(1 + (r * 7) % 25)]
        for r in range(REQUESTS)
    ]  # fmt: skip


def expected_statuses(body: list[dict]) -> list[int]:
    return [201 if "entity" in item else 400 for item in body]


async def post_at_once(url: str, requests: list[tuple[list[dict], str]]) -> list[tuple[int, dict]]:
    """Open a connection per request, then send them all at once; (status, JSON body) each."""
    host, port = url.removeprefix("http://").split(":")
    connections = [await asyncio.open_connection(host, int(port)) for _ in requests]
    for (_, writer), (body, key) in zip(connections, requests, strict=True):
        data = json.dumps(body).encode()
        head = [f"POST {BULK} HTTP/1.1", "Host: hbw", f"Authorization: {basic(key)['Authorization']}",
                "Content-Type: application/json", f"Content-Length: {len(data)}", "Connection: close"]  # fmt: skip
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    answers = await asyncio.gather(*(reader.read() for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    results = []
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        results.append((int(head.split(b" ", 2)[1]), json.loads(payload)))
    return results


def queued_messages(broker) -> list[dict]:
    """The store messages waiting on the heartbeats queue, decoded."""
    return [orjson.loads(m) for m in broker.client.hvals(f"{broker.namespace}:heartbeats.msgs")]


def check_answers(results: list[tuple[int, dict]], requests: list[list[dict]]) -> None:
    """Every 201 lists one status per item, in order, right for each item."""
    for (status, answer), body in zip(results, requests, strict=True):
        if status == 201:
            assert [s for _, s in answer["responses"]] == expected_statuses(body)
            assert [a["data"]["entity"] for a, s in answer["responses"] if s == 201] == [
                item["entity"] for item in body if "entity" in item
            ]


def valid(requests: list[list[dict]], which: Iterable[int] | None = None) -> list[tuple[str, str]]:
    """(user, entity) of the valid heartbeats of requests `which` (default: all), sorted."""
    numbers = range(len(requests)) if which is None else which
    return sorted((f"user-{r}", item["entity"]) for r in numbers for item in requests[r] if "entity" in item)


def carried(messages: list[dict]) -> list[tuple[str, str]]:
    return sorted((hb["user_id"], hb["entity"]) for message in messages for hb in message["args"][0])


@pytest.mark.parametrize("batch_size", [1000, 40])
def test_concurrent_posts_share_messages_and_every_heartbeat_is_stored_once(
    batch_size, keys, db, broker, settings
):
    own = settings.model_copy(update={"http_group_window_ms": 500, "batch_size": batch_size})
    requests = bodies()
    for url in serve(create_app(own, broker=broker, engine=db), own):
        results = asyncio.run(post_at_once(url, list(zip(requests, keys, strict=True))))
    assert [status for status, _ in results] == [201] * REQUESTS
    check_answers(results, requests)

    messages = queued_messages(broker)
    # whole requests fill a message to at least its batch size less the largest request (19 valid)
    at_most = max(10, len(valid(requests)) // (batch_size - 19) + 1)
    assert len(messages) <= at_most, f"{len(messages)} messages for {REQUESTS} requests"
    assert carried(messages) == valid(requests)
    assert max(len(message["args"][0]) for message in messages) <= batch_size
    # a request's heartbeats travel in one message (none of these is larger than the batch size)
    homes: dict[str, set[int]] = {}
    for number, message in enumerate(messages):
        for hb in message["args"][0]:
            homes.setdefault(hb["user_id"], set()).add(number)
    assert all(len(numbers) == 1 for numbers in homes.values())

    drain(settings)
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT user_id, entity FROM heartbeats")).all()
    assert sorted(map(tuple, stored)) == valid(requests)


@pytest.mark.parametrize("web", [{"http_group_window_ms": 500, "batch_size": 100}], indirect=True)
def test_a_lost_message_is_a_503_for_every_request_it_carried_and_for_no_other(
    web, keys, broker, monkeypatch
):
    enqueue, calls = broker.enqueue, []

    def second_one_lost(message, **kwargs):
        calls.append(len(message.args[0]))
        if len(calls) == 2:
            raise redis.ConnectionError("Connection reset by peer")
        return enqueue(message, **kwargs)

    monkeypatch.setattr(broker, "enqueue", second_one_lost)
    requests = bodies()
    results = asyncio.run(post_at_once(web, list(zip(requests, keys, strict=True))))
    check_answers(results, requests)

    statuses = [status for status, _ in results]
    assert set(statuses) == {201, 503} and len(calls) > 2
    refused = [r for r, status in enumerate(statuses) if status == 503]
    assert len(refused) > 1  # the lost message carried a group of several requests
    assert len(valid(requests, refused)) == calls[1]
    assert all("retry" in results[r][1]["error"] for r in refused)
    # what is queued is exactly the heartbeats of the requests answered 201
    answered = [r for r, status in enumerate(statuses) if status == 201]
    assert carried(queued_messages(broker)) == valid(requests, answered)


@pytest.mark.parametrize("web", [{"http_group_window_ms": 0}], indirect=True)
def test_window_zero_keeps_one_message_per_request(web, keys, broker):
    requests = bodies()
    results = asyncio.run(post_at_once(web, list(zip(requests, keys, strict=True))))
    assert [status for status, _ in results] == [201] * REQUESTS
    check_answers(results, requests)
    messages = queued_messages(broker)
    assert len(messages) == REQUESTS
    assert carried(messages) == valid(requests)
