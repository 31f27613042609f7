"""The one place the Dramatiq broker is built.

Call :func:`setup_broker` once per process: it builds the broker, installs it with
``dramatiq.set_broker`` and declares the actors on it (worker.runtime.actors.declare_actors), handing
them the settings. Producers only need the broker (they build messages from
``worker.runtime.messages``).
"""

from __future__ import annotations

import time
from importlib import resources

import dramatiq
import orjson
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware
from dramatiq.middleware.retries import Retries

from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime import clock
from worker.runtime.actors import declare_actors
from worker.runtime.consumer import HbwConsumer, server_changed
from worker.runtime.doorbell import Doorbell
from worker.runtime.liveness import BEAT_SCRIPT, dispatch_script
from worker.runtime.middleware import MessageLog, WorkerHeartbeat
from worker.runtime.redis_client import redis_client
from worker.runtime.redis_keys import Keys
from worker.runtime.redis_memory import RedisOutOfMemory, is_out_of_memory
from worker.settings import Settings

log = get_logger("hbw.broker")

_installed: dramatiq.Broker | None = None


class HbwRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with timely rescue of dead workers' messages.

    Dramatiq requeues a dead worker's unacked messages during "maintenance", which it runs on
    a random 0.1% of commands, so a rescue can take hours on a quiet queue. Here every process
    runs maintenance on each queue at least every ``maintenance_interval_ms``, so a dead
    worker's messages are back on their queue within HBW_WORKER_HEARTBEAT_TIMEOUT_MS +
    max(HBW_MAINTENANCE_INTERVAL_MS, 1 s) of its death, as long as some worker consumes that queue
    (maintenance rides on its polls, or its doorbell's when it is idle, at least one a second).
    """

    def __init__(
        self, *, maintenance_interval_ms: int, wait_replicas: int = 0, wait_timeout_ms: int = 500, **options
    ) -> None:
        super().__init__(**options)
        self.maintenance_interval = maintenance_interval_ms / 1000
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self._last_maintenance: dict[str, float] = {}
        # Liveness on Redis's clock, never the hosts' (worker.runtime.liveness).
        self.scripts["dispatch"] = self.client.register_script(dispatch_script())
        self.scripts["beat"] = self.client.register_script(BEAT_SCRIPT)
        fetch = resources.files("worker.runtime").joinpath("lua/fetch.lua").read_bytes()
        self.scripts["fetch"] = self.client.register_script(fetch)
        self.doorbell = Doorbell(self)
        self._server: str | None = None  # Redis's run_id at the last beat: another one is a failover

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        """Dramatiq's enqueue, a delayed message due on Redis's clock (worker.runtime.clock); a
        consumer of this process parked on that queue wakes at once."""
        if delay is not None:
            clock.measure_if_stale(self.client)
        message = super().enqueue(message, delay=delay)
        self.doorbell.ring(message.queue_name)
        return message

    @property
    def consumer_class(self):
        return HbwConsumer

    def fetch(self, queue_name: str, count: int) -> list[tuple[str, bytes]]:
        """Take up to `count` messages off a queue into this worker's ack set: (Redis id, data) pairs.

        Dramatiq's fetch returns only the data; ours returns the ids Redis holds them under (see
        worker.runtime.consumer). Maintenance, which Dramatiq runs inside its fetch, runs here when due.
        """
        if self._maintenance_due("fetch", queue_name):
            self.do_maintain(queue_name)  # a command dispatch.lua does not know: maintenance only
        try:
            reply = self.scripts["fetch"](args=[self.namespace, queue_name, self.broker_id, count])
        except redis.ResponseError as e:
            if is_out_of_memory(e):  # retried like an outage (worker.runtime.redis_memory)
                raise RedisOutOfMemory() from None
            raise
        pairs = zip(reply[::2], reply[1::2], strict=True)
        return [(redis_id.decode(), data) for redis_id, data in pairs if data is not None]

    def ack_many(self, queue_name: str, redis_ids: list[str]) -> None:
        """Ack several messages in one round trip (a batch's, worker.runtime.consumer.settle)."""
        if not redis_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for redis_id in redis_ids:
            self.scripts["dispatch"](
                keys=[self.namespace],
                client=pipe,
                args=[
                    "ack",
                    0,
                    queue_name,
                    self.broker_id,
                    self.heartbeat_timeout,
                    self.dead_message_ttl,
                    0,
                    self._max_unpack_size(),
                    redis_id,
                ],
            )
        pipe.execute()

    def beat(self, health: dict | None = None) -> None:
        """Tell the other processes this worker is alive, and how it is (worker.runtime.liveness).

        Dramatiq's ``__heartbeats__`` is refreshed by every command, producers' enqueues included,
        so workers also register in ``hbw.workers``, which only they write: that is how
        `hbw status` tells workers from producers. Entries older than an hour are dropped. The
        score is Redis's clock, and the beat still lands when Redis is out of memory.

        Each beat also notes which server answered: after a failover (or a restart) this process's
        consumers look again at their ack sets (worker.runtime.consumer.server_changed).
        """
        ns = self.namespace
        layout = Keys(ns)
        keys = [layout.heartbeats, layout.workers, layout.worker_health]
        self.scripts["beat"](keys=keys, args=[self.broker_id, orjson.dumps(health or {"ok": True})])
        clock.measure(self.client)
        server = self.client.info("server").get("run_id")
        if self._server not in (None, server):
            server_changed(self)
        self._server = server

    def _maintenance_due(self, command: str, queue_name: str) -> int:
        if command in ("ack", "nack"):  # Dramatiq never runs maintenance on these either
            return 0
        if command == "maintain":
            return 1
        now = time.monotonic()
        if now - self._last_maintenance.get(queue_name, 0.0) >= self.maintenance_interval:
            self._last_maintenance[queue_name] = now
            return 1
        return 0

    # Same as RedisBroker._dispatch, but maintenance is due by time per queue instead of by chance,
    # the time is Redis's, and Redis refusing a write for lack of memory is a ConnectionError.
    def _dispatch(self, command):
        dispatch = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name, *args):
            args = [
                command,
                0,  # the timestamp: the script reads Redis's clock instead (worker.runtime.liveness)
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self._maintenance_due(command, queue_name),
                self._max_unpack_size(),
                *args,
            ]
            try:
                if command == "enqueue" and self.wait_replicas:
                    return self._replicated(dispatch, args, keys)
                return dispatch(args=args, keys=keys)
            except redis.ResponseError as e:
                if is_out_of_memory(e):  # retried like an outage (worker.runtime.redis_memory)
                    raise RedisOutOfMemory() from None
                raise

        return do_dispatch

    def _replicated(self, dispatch, args, keys):
        """The enqueue, then WAIT on the same connection (WAIT counts the replicas holding this
        connection's writes): fewer than HBW_REDIS_WAIT_REPLICAS within the timeout fails the
        enqueue like an outage, so nobody is told it is done while a failover could still lose it."""
        pipe = self.client.pipeline(transaction=False)
        dispatch(args=args, keys=keys, client=pipe)
        pipe.wait(self.wait_replicas, self.wait_timeout_ms)
        reply, replicas = pipe.execute()
        if replicas < self.wait_replicas:
            raise NotReplicated(
                f"the enqueue reached {replicas} of {self.wait_replicas} replicas "
                f"within {self.wait_timeout_ms} ms (HBW_REDIS_WAIT_REPLICAS)"
            )
        return reply


class NotReplicated(redis.ConnectionError):
    """An enqueue that Redis took but too few replicas did: retried or refused like an outage
    (a resend is deduplicated downstream)."""


class SafeRetries(Retries):
    """Dramatiq's Retries, except that a retry it cannot enqueue (Redis unreachable) does not get
    the message acked and lost: the message is dead-lettered instead (once Redis is back), where
    `hbw dlq retry` finds it."""

    def after_process_message(self, broker, message, *, result=None, exception=None):
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception as e:
            message.fail()
            message.options["hbw_error"] = (
                f"could not schedule a retry ({describe_error(e)}) after {describe_error(exception)}"
            )
            log.error("message.retry_not_scheduled", message_id=message.message_id, error=describe_error(e))


def make_broker(settings: Settings, *, client: redis.Redis | None = None) -> HbwRedisBroker:
    """The broker the settings describe (on `client` instead of REDIS_URL: fakeredis in tests)."""
    if not (settings.redis_url or client):
        raise RuntimeError("REDIS_URL is not set")
    # MessageLog and Metrics go first: Dramatiq runs after_* hooks in reverse order, so they see
    # the message after Retries has decided whether it is retried or dead-lettered.
    from worker.runtime.metrics import Metrics  # after PROMETHEUS_MULTIPROC_DIR is set (hbw worker)

    middleware = [MessageLog(), Metrics()]
    middleware += [
        SafeRetries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        )
        if m is Retries
        else m()
        for m in default_middleware
    ]
    # A worker busy with long messages sends no command for a while; beat on our own so it is never
    # taken for dead (and its messages redelivered) while it works.
    timeout_s = settings.worker_heartbeat_timeout_ms / 1000
    middleware.append(WorkerHeartbeat(interval=timeout_s / 3, stall_after=4 * timeout_s))
    broker = HbwRedisBroker(
        client=client or redis_client(settings),
        namespace=settings.redis_namespace,
        middleware=middleware,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        dead_message_ttl=int(settings.dead_letter_ttl_days * 86_400_000),
        maintenance_interval_ms=settings.maintenance_interval_ms,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    from worker.runtime.messages import QUEUES, FastJSONEncoder  # queues declared up front, for status

    dramatiq.set_encoder(FastJSONEncoder())  # process-wide in Dramatiq; same JSON on the wire
    clock.install()  # (process-wide too) delayed messages due on Redis's clock
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def setup_broker(settings: Settings) -> dramatiq.Broker:
    """Build and install the broker, then declare the actors on it (idempotent per process: the
    first call's settings are the actors')."""
    global _installed
    if _installed is None:
        broker = make_broker(settings)
        declare_actors(broker, settings)
        dramatiq.set_broker(broker)
        _installed = broker
    return _installed
