"""`hbw enqueue` input: JSON arrays and JSON lines, with undecodable lines kept as rejections."""

from __future__ import annotations

from jobs.heartbeat import Unparseable
from worker.input import read_items


def test_json_array():
    assert read_items(b' [{"a": 1}, 2]\n') == [{"a": 1}, 2]


def test_json_lines_skip_blank_lines():
    assert read_items(b'{"a": 1}\n\n  \n{"b": 2}\n') == [{"a": 1}, {"b": 2}]


def test_bad_lines_become_unparseable_with_their_line_number():
    items = read_items(b'{"a": 1}\nnot json\n{"b": 2}\n{"c": "\x00"}\n\xff\xfe\n')
    assert items[0] == {"a": 1} and items[2] == {"b": 2}
    assert isinstance(items[1], Unparseable) and items[1].reason.startswith("line 2: not valid JSON")
    assert items[3] == Unparseable("line 4: contains a NUL byte")
    assert items[4] == Unparseable("line 5: not valid UTF-8")


def test_broken_array_is_one_rejection():
    [item] = read_items(b'[{"a": 1}, ')
    assert isinstance(item, Unparseable) and "not a valid JSON array" in item.reason


def test_escaped_nul_parses_and_is_left_to_the_validator():
    assert read_items(b'{"entity": "a\\u0000b"}') == [{"entity": "a\x00b"}]
