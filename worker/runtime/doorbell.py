"""One Redis round trip per poll for all of a worker process's idle queues, instead of one each.

Dramatiq's Redis consumers poll their queue when it is empty, each up to once a second: a worker
process consumes ten queues (five, with their delay queues), so an idle worker made ten fetches a
second and woke ten threads for them, two thirds of the CPU an idle worker and its Redis spent,
which every live heartbeat pays for (issue #16). Here a consumer that keeps finding nothing parks:
one thread per process checks the lengths of all parked queues in one pipeline every poll, runs
the broker's maintenance on them when due (which their fetches used to carry: the rescue of dead
workers' messages), and wakes the consumers whose queue holds messages. A message this process
enqueues on a queue it consumes (a delayed message coming due, a wake) rings at once.
"""

from __future__ import annotations

import threading

from db.errors import describe_error
from worker.logs import get_logger
from worker.runtime import redis_keys

log = get_logger("hbw.doorbell")


class Doorbell:
    """Parked consumers of one broker, and the thread that watches their queues."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._parked: dict[str, float] = {}  # queue -> its consumer's poll interval, seconds
        self._tick = threading.Event()  # wakes the thread early (a consumer left)
        self._thread: threading.Thread | None = None

    def park(self, queue: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `queue` to get messages; True when it may have some."""
        with self._lock:
            event = self._events.setdefault(queue, threading.Event())
            self._parked[queue] = timeout
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="doorbell", daemon=True)
                self._thread.start()
        rung = event.wait(timeout)
        if rung:
            event.clear()
            self.leave(queue)
        return rung

    def ring(self, queue: str) -> None:
        """`queue` has a message: wake its consumer if it is parked here."""
        if (event := self._events.get(queue)) is not None:
            event.set()

    def leave(self, queue: str) -> None:
        """Its consumer polls by itself again (it was rung, or it is closing)."""
        with self._lock:
            self._parked.pop(queue, None)
            if not self._parked:
                self._tick.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._parked:
                    self._thread = None  # the next park starts a new one
                    return
                interval = min(self._parked.values())
            self._tick.wait(interval)
            self._tick.clear()
            with self._lock:
                queues = sorted(self._parked)
            if queues:
                self._check(queues)

    def _check(self, queues: list[str]) -> None:
        broker = self.broker
        try:
            for queue in queues:
                if broker._maintenance_due("fetch", queue):
                    broker.do_maintain(queue)
            lengths = redis_keys.ready_lengths(broker, queues)
        except Exception as e:  # let the consumers poll: they report and recover as usual
            log.warning("doorbell.check_failed", error=describe_error(e))
            lengths = [1] * len(queues)
        for queue, length in zip(queues, lengths, strict=True):
            if length:
                self.ring(queue)
