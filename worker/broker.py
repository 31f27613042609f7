"""The one place the Dramatiq broker is built.

Call :func:`setup_broker` once per process, before any actor is declared: it builds the broker,
installs it with ``dramatiq.set_broker`` and then imports ``worker.actors`` so the actors bind to
it. Producers only need the broker (they build messages from ``worker.messages``).
"""

from __future__ import annotations

import contextlib
import time
from typing import ClassVar

import dramatiq
import orjson
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import default_middleware
from dramatiq.middleware.retries import Retries

from worker.deadletters import dead_letter_raw, find_held_ids, find_held_message
from worker.liveness import BEAT_SCRIPT, dispatch_script, health_key
from worker.logs import get_logger
from worker.middleware import MessageLog, WorkerHeartbeat
from worker.redis_memory import RedisOutOfMemory, is_out_of_memory
from worker.settings import Settings

log = get_logger("hbw.broker")

_installed: dramatiq.Broker | None = None


class HbwConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, hardened.

    * A message it cannot decode (a careless producer) crashes Dramatiq's consumer, stays unacked
      until the worker dies and then crashes the next one: here it goes straight to the
      dead-letter queue, with the reason. A message whose options lack ``redis_message_id`` gets
      it back, so it can be acked.
    * When Redis goes away, messages stay in this live worker's ack set that no thread of it will
      ever process, so nothing rescues them until the worker dies: those a consumer had
      prefetched (Dramatiq drops them), the delayed messages a delay-queue consumer held, and
      those a fetch took just before Redis died without its reply arriving (with ``appendfsync
      always`` the fetch survives the crash). The consumer that replaces it hands back every id
      in its ack set that this process did not hand to a worker thread (or, on a delay queue,
      every id), before it fetches anything.
    """

    #: (worker id, queue) -> Redis ids this process's consumers handed to the worker threads and
    #: have not acked or nacked yet: running, or waiting for a thread. They belong in the ack set.
    _taken: ClassVar[dict[tuple[str, str], set[str]]] = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._recovered = False

    def close(self) -> None:
        held = [data for data in self.message_cache if data is not None]
        self.message_cache = []
        if held:
            # With Redis gone their ids stay in the ack set, and the replacing consumer hands them back.
            with contextlib.suppress(redis.ConnectionError):
                self._requeue_data(held)
        super().close()

    @property
    def _taken_ids(self) -> set[str]:
        return self._taken.setdefault((self.broker.broker_id, self.queue_name), set())

    def ack(self, message) -> None:
        super().ack(message)
        self._taken_ids.discard(message.options.get("redis_message_id"))

    def nack(self, message) -> None:
        super().nack(message)
        self._taken_ids.discard(message.options.get("redis_message_id"))

    def _requeue_data(self, datas: list[bytes]) -> None:
        ids = find_held_ids(self.broker, self.queue_name, set(datas))
        if ids:
            self.broker.do_requeue(self.queue_name, *ids)

    def _recover(self) -> None:
        """Hand back what an earlier consumer of this queue, in this process, left behind."""
        held = {h.decode() for h in self.broker.client.smembers(
            f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        )}  # fmt: skip
        # On a delay queue, whatever this worker holds lived only in the previous consumer.
        lost = held if self.queue_name.endswith(".DQ") else held - self._taken_ids
        if lost:
            self.broker.do_requeue(self.queue_name, *sorted(lost))
        self._recovered = True

    def __next__(self):
        if not self._recovered:
            try:
                self._recover()
            except redis.ConnectionError as e:
                raise ConnectionClosed(e) from None
        while True:
            try:
                proxy = super().__next__()
            except DecodeError as e:
                error = f"undecodable message: {type(e.error).__name__}: {e.error}"
                if not dead_letter_raw(self.broker, self.queue_name, self.broker.broker_id, e.data, error):
                    log.error("message.undecodable", queue=self.queue_name, error=error)
                continue
            if proxy is not None and "redis_message_id" not in proxy.options:
                # Acking needs it: a producer that left it out gets it filled in from our records.
                redis_id = find_held_message(self.broker, self.queue_name, proxy.message_id)
                if redis_id:
                    proxy.options["redis_message_id"] = redis_id
            if proxy is not None:
                self._taken_ids.add(proxy.options.get("redis_message_id"))
            return proxy


class HbwRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with timely rescue of dead workers' messages.

    Dramatiq requeues a dead worker's unacked messages during "maintenance", which it runs on
    a random 0.1% of commands, so a rescue can take hours on a quiet queue. Here every process
    runs maintenance on each queue at least every ``maintenance_interval_ms``, so a dead
    worker's messages are back on their queue within HBW_WORKER_HEARTBEAT_TIMEOUT_MS +
    max(HBW_MAINTENANCE_INTERVAL_MS, 1 s) of its death, as long as some worker consumes that queue
    (maintenance rides on its polls, at least one a second).
    """

    def __init__(self, *, maintenance_interval_ms: int, **options) -> None:
        super().__init__(**options)
        self.maintenance_interval = maintenance_interval_ms / 1000
        self._last_maintenance: dict[str, float] = {}
        # Liveness on Redis's clock, never the hosts' (worker.liveness).
        self.scripts["dispatch"] = self.client.register_script(dispatch_script())
        self.scripts["beat"] = self.client.register_script(BEAT_SCRIPT)

    @property
    def consumer_class(self):
        return HbwConsumer

    def beat(self, health: dict | None = None) -> None:
        """Tell the other processes this worker is alive, and how it is (worker.liveness).

        Dramatiq's ``__heartbeats__`` is refreshed by every command, producers' enqueues included,
        so workers also register in ``hbw.workers``, which only they write: that is how
        `hbw status` tells workers from producers. Entries older than an hour are dropped. The
        score is Redis's clock, and the beat still lands when Redis is out of memory.
        """
        ns = self.namespace
        keys = [f"{ns}:__heartbeats__", f"{ns}:hbw.workers", health_key(ns)]
        self.scripts["beat"](keys=keys, args=[self.broker_id, orjson.dumps(health or {"ok": True})])

    def _maintenance_due(self, command: str, queue_name: str) -> int:
        if command in ("ack", "nack"):  # Dramatiq never runs maintenance on these either
            return 0
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
                0,  # the timestamp: the script reads Redis's clock instead (worker.liveness)
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self._maintenance_due(command, queue_name),
                self._max_unpack_size(),
                *args,
            ]
            try:
                return dispatch(args=args, keys=keys)
            except redis.ResponseError as e:
                if is_out_of_memory(e):  # retried like an outage (worker.redis_memory)
                    raise RedisOutOfMemory() from None
                raise

        return do_dispatch


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
                f"could not schedule a retry ({type(e).__name__}: {e}) after {exception!r}"
            )
            log.error("message.retry_not_scheduled", message_id=message.message_id, error=str(e))


def make_broker(settings: Settings) -> HbwRedisBroker:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    # MessageLog and Metrics go first: Dramatiq runs after_* hooks in reverse order, so they see
    # the message after Retries has decided whether it is retried or dead-lettered.
    from worker.metrics import Metrics  # after PROMETHEUS_MULTIPROC_DIR is set (hbw worker)

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
        url=settings.redis_url,
        namespace=settings.redis_namespace,
        middleware=middleware,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        dead_message_ttl=int(settings.dead_letter_ttl_days * 86_400_000),
        maintenance_interval_ms=settings.maintenance_interval_ms,
    )
    from worker.messages import QUEUES, FastJSONEncoder  # queues declared up front, for status

    dramatiq.set_encoder(FastJSONEncoder())  # process-wide in Dramatiq; same JSON on the wire
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
