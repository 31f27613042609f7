"""Delayed messages due on Redis's clock (worker.runtime.clock), whatever this host's clock says:
a host a minute behind neither holds other hosts' messages a minute longer nor sends its own due
a minute early."""

from __future__ import annotations

import time
import types

import dramatiq
import dramatiq.worker
import fakeredis
import pytest

from worker.runtime import clock
from worker.runtime.broker import make_broker
from worker.settings import Settings


@pytest.fixture
def skewed(monkeypatch):
    """This host's wall clock `skew` seconds off; Redis's (fakeredis: the real one) is right."""

    def skew(seconds: float) -> None:
        fake = types.SimpleNamespace(time=lambda: time.time() + seconds, monotonic=time.monotonic)
        monkeypatch.setattr(clock, "time", fake)

    monkeypatch.setattr(clock, "_offset_ms", 0)  # (and as they were after the test)
    monkeypatch.setattr(clock, "_measured_at", None)
    return skew


@pytest.mark.parametrize("seconds", [-60, 60])
def test_a_skewed_host_stamps_and_judges_due_times_on_redis_time(skewed, seconds):
    skewed(seconds)
    settings = Settings(**{"DATABASE_URL": "postgresql://u@127.0.0.1:1/u", "REDIS_URL": "redis://r:1/0"})
    broker = make_broker(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    message = dramatiq.Message(
        queue_name="projects", actor_name="update_projects", args=(), kwargs={}, options={}
    )
    sent = broker.enqueue(message, delay=2_000)
    real = time.time() * 1000
    assert abs(clock._offset_ms + seconds * 1000) < 50  # measured before the first delayed message
    assert abs(sent.options["eta"] - (real + 2_000)) < 100  # not a minute early or late
    assert abs(dramatiq.worker.current_millis() - real) < 100  # what the holding worker compares with
