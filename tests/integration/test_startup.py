"""Startup checks: a worker warns about a Redis that can lose messages (on a Redis of its own,
since the test changes its configuration)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from worker.embedded import EmbeddedRedis
from worker.runtime.broker import make_broker
from worker.runtime.runner import redis_warnings
from worker.settings import Settings

pytestmark = pytest.mark.slow


def test_redis_persistence_and_eviction_warnings(embedded_dir):
    server = EmbeddedRedis(embedded_dir / "redis", free_port())
    server.start()
    try:
        broker = make_broker(Settings(REDIS_URL=server.url, DATABASE_URL="postgresql://unused/x"))
        assert redis_warnings(broker) == []  # appendonly yes, noeviction
        broker.client.config_set("appendonly", "no")
        broker.client.config_set("save", "")
        [warning] = redis_warnings(broker)
        assert "keeps nothing on disk" in warning and "appendonly yes" in warning
        broker.client.config_set("save", "900 1")
        [warning] = redis_warnings(broker)
        assert "only by snapshots" in warning
        broker.client.config_set("appendonly", "yes")
        broker.client.config_set("maxmemory-policy", "allkeys-lru")
        [warning] = redis_warnings(broker)
        assert "allkeys-lru" in warning and "noeviction" in warning
    finally:
        server.stop()
