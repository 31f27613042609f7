"""Acceptance: a realistic stream, delivered in random batches and then all over again, drained
by the workers, equals the reference computed from the spec; reprocessing changes nothing."""

from __future__ import annotations

import random

from tests import reference, streams
from tests.conftest import drain
from tests.tables import diff, snapshot
from worker import cli
from worker.producer import enqueue_heartbeats


def deliver(stream: streams.Stream, rng: random.Random, broker) -> None:
    for batch in streams.random_batches(rng, stream.items):
        enqueue_heartbeats(batch, batch_size=rng.randint(1, 500), broker=broker)


def test_stream_delivered_twice_equals_reference_and_reprocess_changes_nothing(db, settings, broker, capsys):
    stream = streams.generate(seed=7, users=10, days=6)
    rng = random.Random(11)
    expected = reference.compute(stream.valid)
    assert len(expected.heartbeats) > 5_000, "the stream should be big enough to mean something"

    deliver(stream, rng, broker)
    shuffled = list(stream.items)
    rng.shuffle(shuffled)
    deliver(
        streams.Stream(stream.valid, stream.invalid, shuffled, stream.first_day, stream.last_day), rng, broker
    )
    drain(settings)

    after_ingest = snapshot(db)
    assert diff(expected, after_ingest) == []

    code = cli.main(["reprocess", "--since", str(stream.first_day), "--until", str(stream.last_day)])
    assert code == 0
    assert "user-day(s)" in capsys.readouterr().out
    drain(settings)
    assert snapshot(db) == after_ingest


def test_each_invalid_item_is_rejected_and_every_valid_item_stored(db, settings, broker):
    stream = streams.generate(seed=3, users=3, days=2, invalid_share=0.0)
    result = enqueue_heartbeats(stream.items, batch_size=100, broker=broker)
    invalid_indexes = {i for i, item in enumerate(stream.items) if any(item is bad for bad in stream.invalid)}
    assert {r.index for r in result.rejected} == invalid_indexes
    assert all(r.reason for r in result.rejected)
    assert result.accepted == len(stream.valid)
    drain(settings)
    assert diff(reference.compute(stream.valid), snapshot(db)) == []
