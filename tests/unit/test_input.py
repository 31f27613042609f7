"""`hbw enqueue` input: JSON arrays and JSON lines, read as a stream, with undecodable lines or
elements kept as rejections that name their line."""

from __future__ import annotations

import io

import pytest
from dramatiq.brokers.stub import StubBroker

from jobs.heartbeat import Rejection, Unparseable
from worker.cli.input import MAX_ITEM_BYTES, RejectionSpool, read_items
from worker.producer import enqueue_heartbeats
from worker.runtime.messages import HEARTBEATS_QUEUE

DEEP = b"[" * 100_000 + b"]" * 100_000
BIG_NUMBER = b"9" * 5_000


def read(data: bytes) -> list:
    return list(read_items(io.BytesIO(data)))


def reasons(items: list) -> list[str]:
    return [item.reason for item in items if isinstance(item, Unparseable)]


def test_json_array():
    assert read(b' [{"a": 1}, 2]\n') == [{"a": 1}, 2]


def test_json_lines_skip_blank_lines():
    assert read(b'{"a": 1}\n\n  \n{"b": 2}\n') == [{"a": 1}, {"b": 2}]


def test_empty_input():
    assert read(b"") == read(b" \n\n ") == read(b"[]") == read(b"\n [ \n ] \n") == []


def test_bad_lines_become_unparseable_with_their_line_number():
    items = read(b'{"a": 1}\nnot json\n{"b": 2}\n{"c": "\x00"}\n\xff\xfe\n')
    assert items[0] == {"a": 1} and items[2] == {"b": 2}
    assert isinstance(items[1], Unparseable) and items[1].reason.startswith("line 2: not valid JSON")
    assert items[3] == Unparseable("line 4: contains a NUL byte")
    assert items[4] == Unparseable("line 5: not valid UTF-8")


def test_lines_python_cannot_read_are_rejected_alone():
    """Deep nesting raised RecursionError and a 5,000-digit number ValueError, ending the read."""
    long_line = b'{"entity": "' + b"x" * MAX_ITEM_BYTES + b'"}'
    data = b"\n".join([b'{"a": 1}', DEEP, b'{"time": ' + BIG_NUMBER + b"}", long_line, b'{"b": 2}', b""])
    assert read(b"\n" + data) == [
        {"a": 1},
        Unparseable("line 3: nested too deeply"),
        Unparseable("line 4: a number has more than 4300 digits"),
        Unparseable(f"line 5: longer than {MAX_ITEM_BYTES} bytes"),
        {"b": 2},
    ]


def test_array_elements_python_cannot_read_are_rejected_alone():
    data = b'[{"a": 1},\n' + DEEP + b',\n {"time": ' + BIG_NUMBER + b'}, {"b": [2, {"c": 3}]}]\n'
    items = read(data)
    assert items[0] == {"a": 1} and items[3] == {"b": [2, {"c": 3}]} and len(items) == 4
    assert items[1] == Unparseable("line 2 column 1: nested too deeply")
    assert items[2] == Unparseable("line 3 column 2: a number has more than 4300 digits")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'[{"a": 1}, ', "line 1 column 12: not a valid JSON array (it ends before its closing ']')"),
        (b'[{"a": 1},\n  {"b" 2}]', "line 2 column 8: not a valid JSON array (Expecting ':' delimiter)"),
        (b'[{"a": 1} {"b": 2}]', "line 1 column 11: not a valid JSON array (expected ',' or ']' after"),
        (b'[{"a": 1}] {"b": 2}', "line 1 column 12: not a valid JSON array (more data after its closing"),
        (b'[{"a": 1}, "\xff"]', "line 1: not valid UTF-8"),
        (b'[{"a": 1}, "' + b"x" * (2 * MAX_ITEM_BYTES) + b'"]', "line 1 column 12: an element longer than"),
    ],
)
def test_a_broken_array_ends_with_one_rejection_after_the_elements_before_it(data, reason):
    items = read(data)
    assert items[0] == {"a": 1} and len(items) == 2
    assert isinstance(items[1], Unparseable) and items[1].reason.startswith(reason), items[1]
    assert items[1].reason.endswith("the rest of the input was not read")


def test_positions_stay_right_across_buffer_refills():
    """The reader forgets what it has read (1 MiB at a time) but keeps counting lines and columns."""
    element = b'{"entity": "' + b"x" * 1000 + b'"}'
    data = b"[" + b",\n".join([element] * 3000) + b", " + element + b" oops]"  # 3 MB; 3,000 lines
    assert reasons(read(data)) == [
        f"line 3000 column {len(element) * 2 + 4}: not a valid JSON array (expected ',' or ']' after an "
        "element); the rest of the input was not read"
    ]


def test_escaped_nul_parses_and_is_left_to_the_validator():
    assert read(b'{"entity": "a\\u0000b"}') == [{"entity": "a\x00b"}]


def test_rejection_spool_keeps_order_and_count_on_disk():
    with RejectionSpool() as spool:
        for index in range(100_000):
            spool.append(Rejection(index, f"reason {index} ünïcode: {'x' * 100}"))
        assert len(spool) == 100_000
        assert spool._file._rolled  # past its memory budget, on disk
        assert list(spool)[-1] == Rejection(99_999, f"reason 99999 ünïcode: {'x' * 100}")
        assert [r.index for r in spool] == list(range(100_000))


def test_enqueue_sends_each_batch_as_soon_as_it_is_full():
    """A stream goes through one batch at a time: nothing waits for the end of the input."""
    broker = StubBroker()
    broker.declare_queue(HEARTBEATS_QUEUE)
    queued = []

    def items():
        for i in range(7):
            queued.append(broker.queues[HEARTBEATS_QUEUE].qsize())
            yield {"user_id": "u", "entity": f"e{i}", "time": 1_700_000_000} if i != 3 else {"bad": 1}

    result = enqueue_heartbeats(items(), batch_size=2, broker=broker)
    assert queued == [0, 0, 1, 1, 1, 2, 2]  # item 5 is read after the 2nd batch (items 2 and 4) went
    assert (result.accepted, result.enqueued, result.messages) == (6, 6, 3)
    assert [r.index for r in result.rejected] == [3]
