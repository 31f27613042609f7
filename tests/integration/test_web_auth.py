"""`hbw serve` over real HTTP: API keys (`hbw keys`), wrong or missing ones, the rate limit per key
and the budget of failed authentications per client address, and the limits on a request's body."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from jobs.keys import create_key, revoke_key
from tests.web_client import BULK, basic, post, queued, serve
from worker.http.app import create_app


def test_wrong_or_missing_keys_get_401_and_enqueue_nothing(web, key, db, broker):
    url = f"{web}/api/v1/users/current/heartbeats.bulk"
    body = [{"entity": "a.py", "time": time.time()}]
    with db.begin() as conn:
        revoked = create_key(conn, "bob")
        revoke_key(conn, revoked)
    cases = {
        "no key": {},
        "not base64": {"Authorization": "Basic !!!"},
        "not a uuid": basic("hunter2"),
        "unknown key": basic("waka_3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10"),
        "revoked key": basic(revoked),
    }
    for case, headers in cases.items():
        status, answer, _ = post(url, body, headers)
        assert status == 401, case
        assert answer["error"], case
    assert queued(broker) == 0
    # the same request with the right key goes through (so the 401s were about the key)
    assert post(url, body, basic(key))[0] == 201
    assert post(url, body, {"Authorization": f"Bearer {key}"})[0] == 201
    assert queued(broker) == 2


@pytest.mark.parametrize(
    "web",
    [{"http_max_body_bytes": 4096, "http_max_heartbeats": 3, "http_rate_limit_per_minute": 5}],
    indirect=True,
)
def test_limits_and_malformed_bodies_get_clear_errors(web, key, broker):
    url = f"{web}/api/v1/users/current/heartbeats.bulk"
    one = {"entity": "a.py", "time": time.time()}

    status, answer, _ = post(url, [{**one, "entity": "x" * 5000}], basic(key))
    assert status == 413 and "4096 bytes" in answer["error"]
    status, answer, _ = post(url, [one] * 4, basic(key))
    assert status == 400 and "too many heartbeats: 4 > 3" in answer["error"]
    status, answer, _ = post(url, b'[{"entity": "a.py", "time": ', basic(key))
    assert status == 400 and "malformed JSON" in answer["error"]
    status, answer, _ = post(url, "just a string", basic(key))
    assert status == 400 and "array" in answer["error"]
    assert queued(broker) == 0

    # the rate limit counts requests per key per clock minute (the refused ones above never
    # reached it); keep the six requests inside one minute
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)
    statuses = [post(url, [one], basic(key))[0] for _ in range(5)]
    status, answer, headers = post(url, [one], basic(key))
    assert statuses == [201] * 5
    assert status == 429 and "rate limit" in answer["error"]
    assert 1 <= int(headers["retry-after"]) <= 61
    assert queued(broker) == 5


def test_hbw_keys_create_list_revoke(db, capsys):
    from worker import cli

    assert cli.main(["keys", "create", "carol"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("waka_")
    with db.connect() as conn:
        stored = conn.execute(sa.text("SELECT user_id, hint, key_hash FROM api_keys")).one()
    assert stored.user_id == "carol" and key.endswith(stored.hint)
    assert key.encode() not in bytes(stored.key_hash), "only a hash is stored"

    assert cli.main(["keys", "list", "carol", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["hint"] == f"...{key[-4:]}" and listed["revoked_at"] is None

    assert cli.main(["keys", "revoke", key]) == 0
    assert "carol" in capsys.readouterr().out
    assert cli.main(["keys", "revoke", key]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert cli.main(["keys", "revoke", "not-a-key"]) == 2
    capsys.readouterr()
    assert cli.main(["keys", "list", "carol", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None


@pytest.mark.parametrize("web", [{"http_auth_failures_per_minute": 3}], indirect=True)
def test_failed_authentications_are_limited_per_client_address(web, key, db, broker, settings):
    """Past its budget of failures an address gets 429 whatever the key, in every server process
    (the count is in Redis); X-Forwarded-For is believed only from a configured trusted proxy."""
    body = [{"entity": "a.py", "time": time.time()}]
    wrong = basic("waka_3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10")
    limited = settings.model_copy(update={"http_auth_failures_per_minute": 3, "http_key_cache_seconds": 0})
    other_process = serve(create_app(limited, broker=broker, engine=db), limited)
    other = next(other_process)
    proxied = limited.model_copy(update={"http_trusted_proxies": "127.0.0.1"})
    behind_proxy = serve(create_app(proxied, broker=broker, engine=db), proxied)
    proxy = next(behind_proxy)
    try:
        assert [post(web + BULK, body, wrong)[0] for _ in range(2)] == [401, 401]
        assert post(other + BULK, body, {})[0] == 401  # a missing key is a failure too
        status, answer, headers = post(other + BULK, body, wrong)
        assert status == 429 and "failed authentications" in answer["error"]
        assert 1 <= int(headers["retry-after"]) <= 60
        # the right key from this address is refused as well, so guessing learns nothing
        assert post(web + BULK, body, basic(key))[0] == 429
        # and a forged X-Forwarded-For changes nothing where no proxy is trusted
        assert post(web + BULK, body, {**basic(key), "X-Forwarded-For": "203.0.113.9"})[0] == 429
        assert queued(broker) == 0

        # behind a trusted proxy each forwarded address has its own budget
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        assert post(proxy + BULK, body, {**basic(key), **forwarded})[0] == 201
        assert [post(proxy + BULK, body, {**wrong, **forwarded})[0] for _ in range(4)] == [401] * 3 + [429]
        assert post(proxy + BULK, body, {**basic(key), **forwarded})[0] == 429
        assert post(proxy + BULK, body, {**basic(key), "X-Forwarded-For": "203.0.113.10"})[0] == 201
        assert queued(broker) == 2
    finally:
        other_process.close()
        behind_proxy.close()
