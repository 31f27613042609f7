"""Which Redis a process talks to: REDIS_URL's, or the master the sentinels name (worker.runtime.redis_client)."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from worker.errors import settings_problem
from worker.runtime.redis_client import redis_client, sentinel_addresses
from worker.settings import Settings


@pytest.fixture(autouse=True)
def no_redis_env(monkeypatch):
    for name in ("REDIS_URL", "HBW_REDIS_URL", "REDIS_SENTINELS", "REDIS_MASTER_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_the_master_is_named_by_redis_master_name_or_redis_urls_host():
    alone = Settings(redis_sentinels="10.0.0.1:26379", redis_master_name="m")
    assert alone.redis_url == "redis://m/0"
    url = Settings(redis_sentinels="s1", redis_url="redis://:secret@mymaster/3")
    pool = redis_client(url).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("secret", 3)
    named = redis_client(Settings(redis_sentinels="s1", redis_url="redis://x/0", redis_master_name="m"))
    assert named.connection_pool.service_name == "m"
    assert redis_client(Settings(redis_url="redis://h:1/2")).connection_pool.connection_kwargs["host"] == "h"


def test_sentinels_without_a_master_name_are_one_clear_line():
    with pytest.raises(ValueError) as raised:
        Settings(redis_sentinels="10.0.0.1:26379")
    assert settings_problem(raised.value) == (
        "configuration error: REDIS_SENTINELS is set: name the master with REDIS_MASTER_NAME"
    )


@pytest.mark.parametrize(
    ("text", "addresses"),
    [
        ("a:1,b:2", [("a", 1), ("b", 2)]),
        (" a , b:26380 ", [("a", 26379), ("b", 26380)]),
        ("[::1]:26379,[fe80::1]", [("::1", 26379), ("fe80::1", 26379)]),
        ("", []),
    ],
)
def test_sentinel_addresses(text, addresses):
    assert sentinel_addresses(text) == addresses
