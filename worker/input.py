"""Reading heartbeats for `hbw enqueue`: a JSON array, or JSON lines (one object per line).

A line that cannot be decoded becomes an ``Unparseable`` item, so it is rejected with its index
and line number while every other line still goes through.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.heartbeat import Unparseable


def read_items(data: bytes) -> list[Any]:
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        return _read_array(stripped)
    items: list[Any] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            items.append(_read_line(number, line))
    return items


def _read_array(data: bytes) -> list[Any]:
    try:
        value = json.loads(data)
    except UnicodeDecodeError:
        return [Unparseable("input is not valid UTF-8")]
    except json.JSONDecodeError as e:
        return [Unparseable(f"input is not a valid JSON array: {e.msg} at line {e.lineno} column {e.colno}")]
    if not isinstance(value, list):  # pragma: no cover - starts with '[' so it is a list
        return [Unparseable("input is not a JSON array")]
    return value


def _read_line(number: int, line: bytes) -> Any:
    if b"\x00" in line:
        return Unparseable(f"line {number}: contains a NUL byte")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Unparseable(f"line {number}: not valid UTF-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return Unparseable(f"line {number}: not valid JSON ({e.msg} at column {e.colno})")
