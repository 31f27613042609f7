"""A worker process with delivery faults injected, for the fault suite (run against its servers):
duplicate deliveries, acks that fail (Dramatiq retries them; a store batch's run again) and acks
that are lost (the message stays held by this worker until it is found dead), for the messages
Dramatiq runs and those a store batch takes along. Stops on SIGTERM like `hbw worker`.

    python -m tests.faults.faulty_worker SEED TALLY_FILE    (settings from the environment)
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import dramatiq.worker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware

from worker.logs import configure_logging
from worker.runtime.broker import HbwRedisBroker, setup_broker
from worker.runtime.consumer import HbwConsumer, settle
from worker.runtime.runner import run_worker
from worker.settings import get_settings


def install_faults(broker, rng: random.Random, tally: Counter) -> None:
    from worker.runtime import actors  # (declared by setup_broker)

    class FlakyAcks(HbwConsumer):
        def ack(self, message):
            roll = rng.random()
            if roll < 0.1:
                tally["acks failed (then retried)"] += 1
                raise ConnectionClosed(ConnectionError("injected"))
            if roll < 0.2:
                tally["acks lost (message redelivered)"] += 1
                self.queued_message_ids.discard(message.message_id)
                return
            super().ack(message)

    class Duplicates(Middleware):
        def after_process_message(self, broker, message, *, result=None, exception=None):
            if exception is None and rng.random() < 0.1:
                tally["duplicate deliveries injected"] += 1
                broker.enqueue(message.copy())

    def flaky_ack_many(self, queue, redis_ids):  # a store batch's acks: the same faults
        roll = rng.random()
        if roll < 0.1:
            tally["acks failed (then retried)"] += len(redis_ids)
            raise ConnectionError("injected")
        kept = [i for i in redis_ids if rng.random() >= 0.1]
        tally["acks lost (message redelivered)"] += len(redis_ids) - len(kept)
        ack_many(self, queue, kept)

    def settle_with_duplicates(broker, queue, done, failed):
        settle(broker, queue, done, failed)
        for message in done:
            if rng.random() < 0.1:
                tally["duplicate deliveries injected"] += 1
                broker.enqueue(message.copy())

    ack_many = HbwRedisBroker.ack_many
    HbwRedisBroker.ack_many = flaky_ack_many
    actors.settle = settle_with_duplicates
    HbwRedisBroker.consumer_class = property(lambda self: FlakyAcks)
    dramatiq.worker.POST_PROCESS_MESSAGE_RETRY_DELAY_SECS = 0.05
    broker.add_middleware(Duplicates())


def main(seed: str, tally_file: str) -> int:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    tally: Counter = Counter()
    install_faults(setup_broker(settings), random.Random(int(seed)), tally)
    try:
        return run_worker(settings, threads=4)
    finally:
        Path(tally_file).write_text(json.dumps(tally))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
