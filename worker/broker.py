"""The one place the Dramatiq broker is built.

Call :func:`setup_broker` once per process, before any actor is declared: it builds the broker,
installs it with ``dramatiq.set_broker`` and then imports ``worker.actors`` so the actors bind to
it. Producers only need the broker (they build messages from ``worker.messages``).
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware
from dramatiq.middleware.retries import Retries

from worker.middleware import MessageLog
from worker.settings import Settings

_installed: dramatiq.Broker | None = None


class HbwRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with timely rescue of dead workers' messages.

    Dramatiq requeues a dead worker's unacked messages during "maintenance", which it runs on
    a random 0.1% of commands, so a rescue can take hours on a quiet queue. Here every process
    runs maintenance on each queue at least every ``maintenance_interval_ms``, so a dead
    worker's messages are back on their queue within heartbeat timeout + that interval.
    """

    def __init__(self, *, maintenance_interval_ms: int, **options) -> None:
        super().__init__(**options)
        self.maintenance_interval = maintenance_interval_ms / 1000
        self._last_maintenance: dict[str, float] = {}

    def _maintenance_due(self, command: str, queue_name: str) -> int:
        if command in ("ack", "nack"):  # Dramatiq never runs maintenance on these either
            return 0
        now = time.monotonic()
        if now - self._last_maintenance.get(queue_name, 0.0) >= self.maintenance_interval:
            self._last_maintenance[queue_name] = now
            return 1
        return 0

    # Same as RedisBroker._dispatch, but maintenance is due by time per queue instead of by chance.
    def _dispatch(self, command):
        dispatch = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name, *args):
            args = [
                command,
                int(time.time() * 1000),
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self._maintenance_due(command, queue_name),
                self._max_unpack_size(),
                *args,
            ]
            return dispatch(args=args, keys=keys)

        return do_dispatch


def make_broker(settings: Settings) -> HbwRedisBroker:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    # MessageLog goes first: Dramatiq runs after_* hooks in reverse order, so it sees the message
    # after Retries has decided whether it is retried or dead-lettered.
    middleware = [MessageLog()]
    middleware += [
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        )
        if m is Retries
        else m()
        for m in default_middleware
    ]
    broker = HbwRedisBroker(
        url=settings.redis_url,
        namespace=settings.redis_namespace,
        middleware=middleware,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        dead_message_ttl=int(settings.dead_letter_ttl_days * 86_400_000),
        maintenance_interval_ms=settings.maintenance_interval_ms,
    )
    from worker.messages import QUEUES  # declared up front so producers and status see every queue

    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Build and install the broker, then declare the actors on it (idempotent per process)."""
    global _installed
    if _installed is None:
        broker = make_broker(settings)
        dramatiq.set_broker(broker)
        _installed = broker
        import worker.actors  # noqa: F401  (binds the actors to the broker just installed)
    return _installed


def installed_broker() -> dramatiq.Broker | None:
    return _installed
