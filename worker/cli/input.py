"""Reading heartbeats for `hbw enqueue` as a stream: JSON lines (one item per line) or a JSON array.

Items come out one at a time as the input is read, and `hbw enqueue` validates and enqueues them a
batch at a time, so memory does not grow with the input. An item that cannot be decoded becomes
an :class:`Unparseable` naming its line, so it is rejected alone:

* JSON lines: a bad line (not JSON, not UTF-8, a NUL byte, nested too deeply, a number with too
  many digits, longer than ``MAX_ITEM_BYTES``) is rejected and the next line is read.
* A JSON array: an element that is valid JSON but unacceptable (nested too deeply, a number with
  too many digits) is rejected alone. A syntax error, invalid UTF-8 or an element longer than
  ``MAX_ITEM_BYTES`` ends the array, since where the next element starts is unknown: the elements
  before it go through, the rest is not read.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from jobs.heartbeat import Rejection, Unparseable
from worker.errors import ConfigError

#: The longest line, or array element, read (a heartbeat at every field's limit is ~10 KB).
MAX_ITEM_BYTES = 1 << 20
_CHUNK = 1 << 20
_WHITESPACE = b" \t\r\n"
_DECODER = json.JSONDecoder()
_SPACES = re.compile(r"[ \t\r\n]*")
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{},]')


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """The file at `path`, or stdin for ``-`` (saying so on a terminal, where it waits for typing)."""
    if path == "-":
        if sys.stdin.isatty():
            print("reading heartbeats from stdin (Ctrl-D to end)…", file=sys.stderr, flush=True)
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the OSError is turned into one line
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    with stream:
        yield stream


def read_items(stream: BinaryIO) -> Iterator[Any]:
    """The items of `stream`, in input order, as they are read (see the module docstring)."""
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    line = 1
    while True:  # skip leading whitespace to see which format this is
        head = stream.peek(_CHUNK)
        if not head:
            return
        content = head.lstrip(_WHITESPACE)
        skipped = len(head) - len(content)
        line += head.count(b"\n", 0, skipped)
        stream.read(skipped)
        if content:
            break
    yield from (_array(stream, line) if content.startswith(b"[") else _lines(stream, line))


def _lines(stream: BinaryIO, number: int) -> Iterator[Any]:
    while line := stream.readline(MAX_ITEM_BYTES + 1):
        if len(line) > MAX_ITEM_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield Unparseable(f"line {number}: longer than {MAX_ITEM_BYTES} bytes")
        elif line.strip():
            yield _read_line(number, line)
        number += 1


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
    except (RecursionError, ValueError) as e:
        return Unparseable(f"line {number}: {_unacceptable(e)}")


def _unacceptable(error: Exception) -> str:
    """Why valid JSON cannot be read: Python's limits on nesting and on digits of an integer."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if "digits" in str(error):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(error)


class _Text:
    """The decoded text of a binary stream, read ``MAX_ITEM_BYTES`` characters ahead of ``pos``
    (or to its end) and no more, with the line and column of any position for messages."""

    def __init__(self, stream: BinaryIO, line: int) -> None:
        self.stream, self.decoder = stream, codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.eof = "", 0, False
        self.line, self.column = line, 0  # where text[0] is: its line, characters before it on that line
        self.bad_utf8: int | None = None  # the line of the first byte that is not UTF-8 (the text ends there)

    def fill(self) -> None:
        if self.pos >= _CHUNK:  # forget what was read
            newline = self.text.rfind("\n", 0, self.pos)
            self.column = self.pos - newline - 1 if newline >= 0 else self.column + self.pos
            self.line += self.text.count("\n", 0, self.pos)
            self.text, self.pos = self.text[self.pos :], 0
        while not self.eof and len(self.text) - self.pos < MAX_ITEM_BYTES:
            data = self.stream.read(_CHUNK)
            self.eof = not data
            try:
                self.text += self.decoder.decode(data, final=self.eof)
            except UnicodeDecodeError as e:
                self.text += e.object[: e.start].decode("utf-8")
                self.bad_utf8, self.eof = self.line + self.text.count("\n"), True

    def skip_spaces(self) -> None:
        self.pos = _SPACES.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def where(self, pos: int) -> str:
        newline = self.text.rfind("\n", 0, pos)
        column = pos - newline if newline >= 0 else self.column + pos + 1
        line = self.line + self.text.count("\n", 0, pos)
        return f"line {line} column {column}"

    def broken(self, pos: int, what: str, *, element_at: int | None = None) -> Unparseable:
        """The array cannot be read past `pos`: why, for the rejection that ends it."""
        if self.bad_utf8 is not None:
            return Unparseable(f"line {self.bad_utf8}: not valid UTF-8; the rest of the input was not read")
        if (
            element_at is not None
            and not self.eof
            and (pos >= len(self.text) or what.startswith("Unterminated string"))
        ):
            return Unparseable(
                f"{self.where(element_at)}: an element longer than {MAX_ITEM_BYTES} bytes; "
                "the rest of the input was not read"
            )
        return Unparseable(
            f"{self.where(pos)}: not a valid JSON array ({what}); the rest of the input was not read"
        )


def _array(stream: BinaryIO, line: int) -> Iterator[Any]:
    text = _Text(stream, line)
    text.fill()
    text.pos, expect_value, first = 1, True, True  # past the '['
    while True:
        text.fill()
        text.skip_spaces()
        if text.pos >= len(text.text):
            yield text.broken(text.pos, "it ends before its closing ']'")
            return
        char, start = text.text[text.pos], text.pos
        if not expect_value or (first and char == "]"):
            text.pos += 1
            if char == "]":
                break
            if char != ",":
                yield text.broken(start, "expected ',' or ']' after an element")
                return
            expect_value = True
            continue
        first = expect_value = False
        try:
            value, text.pos = _DECODER.raw_decode(text.text, start)
        except json.JSONDecodeError as e:
            yield text.broken(e.pos, e.msg, element_at=start)
            return
        except (RecursionError, ValueError) as e:  # valid JSON, but not for Python: skip this element
            end = _end_of_element(text.text, start)
            if end is None:
                yield text.broken(len(text.text), _unacceptable(e), element_at=start)
                return
            yield Unparseable(f"{text.where(start)}: {_unacceptable(e)}")
            text.pos = end
        else:
            yield value
    text.fill()
    text.skip_spaces()
    if text.pos < len(text.text):
        yield text.broken(text.pos, "more data after its closing ']'")


def _end_of_element(text: str, start: int) -> int | None:
    """Where the array element at `start` ends (its ',' or the array's ']'), found without
    parsing it; None when that is not in the text read."""
    depth = 0
    for token in _TOKENS.finditer(text, start):
        char = token.group()[0]
        if char in "[{":
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        elif char in ",]}" and not depth:
            return token.start()
    return None


class RejectionSpool:
    """Rejections, in input order, held in memory while few and on disk past a few MB, so a stream
    of bad input cannot exhaust memory before `hbw enqueue` prints its result."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+", encoding="utf-8")  # noqa: SIM115
        self._count = 0

    def __enter__(self) -> RejectionSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def append(self, rejection: Rejection) -> None:
        self._file.write(json.dumps([rejection.index, rejection.reason]) + "\n")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Rejection]:
        self._file.seek(0)
        for line in self._file:
            yield Rejection(*json.loads(line))
