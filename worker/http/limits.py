"""Connection limits of `hbw serve`, enforced where uvicorn reads the socket (before any route).

uvicorn's httptools protocol puts no bound on a request head (llhttp gathers a header of any
length in memory) and no deadline on reading a head or a body: a client sending a byte every few
seconds holds its connection, and its buffers, for as long as it likes. This subclass adds:

* a head (request line and headers) over ``HBW_HTTP_MAX_HEADER_BYTES`` is answered ``431`` and the
  connection closed; an unfinished head is cut off once it passed the limit, so at most the limit
  plus one socket read (256 KiB) is ever buffered;
* a head not complete ``HBW_HTTP_HEADER_TIMEOUT_SECONDS`` after the connection opened (for later
  requests on a keep-alive connection: after their first byte; idle time between requests is
  uvicorn's keep-alive timeout) is answered ``408`` and the connection closed;
* a body not complete ``HBW_HTTP_BODY_TIMEOUT_SECONDS`` after its head is answered ``408`` (unless
  the app already answered) and the connection closed; the app sees a client disconnect.

Why here: uvicorn's other parser, h11, bounds a head (h11_max_incomplete_event_size) but has no
read deadlines either, and parsing a 25-heartbeat bulk request costs ~75 µs of CPU with it against
~15 µs with httptools; these limits add ~3.5 µs (one event-loop timer per phase, a few attribute
updates per read), on a request that costs ~1 ms of server CPU end to end.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.logs import get_logger
from worker.settings import Settings

log = get_logger("hbw.http")


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn.run / uvicorn.Config arguments of `hbw serve` that carry its limits.

    X-Forwarded-For decides the client address only when HBW_HTTP_TRUSTED_PROXIES names the proxy
    (uvicorn would otherwise trust it from 127.0.0.1, i.e. from any local process).
    """
    limits = HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
    )
    proxies = settings.http_trusted_proxies.strip()
    return {
        "http": functools.partial(LimitedHttpToolsProtocol, limits=limits),
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
    }


def error_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response closing the connection, in WakaTime's error shape."""
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (see the module docstring)."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "head"
        #: Bytes of the unfinished head in reads after the one it began in (None: not in a head).
        self._head_bytes: int | None = None
        self._messages = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        messages = self._messages
        super().data_received(data)
        # A read that began a request is not counted (part of it may be the previous body);
        # a finished head is measured exactly in on_headers_complete.
        if self._head_bytes is not None and self._messages == messages:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._log_too_large()
                self._close(431, "Request Header Fields Too Large", self._head_too_large)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._head_bytes = 0
        if self._deadline is None:
            self._arm("head", self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._log_too_large()
            # Answered through uvicorn's own request cycle (it then discards the body and closes),
            # as uvicorn answers 503 over its concurrency limit.
            body = orjson.dumps({"error": self._head_too_large})
            self.app, app = functools.partial(_refuse, body), self.app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        self._arm("body", self.limits.body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _log_too_large(self) -> None:
        client = self.client and self.client[0]
        log.info("http.headers_too_large", limit=self.limits.max_header_bytes, client=client)

    @property
    def _head_too_large(self) -> str:
        return f"request headers larger than {self.limits.max_header_bytes} bytes"

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        seconds = self.limits.header_timeout if self._phase == "head" else self.limits.body_timeout
        log.info("http.timeout", phase=self._phase, seconds=seconds, client=self.client and self.client[0])
        what = "headers" if self._phase == "head" else "body"
        self._close(408, "Request Timeout", f"request {what} not received within {seconds:g} s")

    def _close(self, status: int, reason: str, message: str) -> None:
        """Answer `status` unless this connection already answers something, then close it."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == "head":  # the cycle, if any, is the previous request's
            answer = cycle is None or cycle.response_complete
        else:
            answer = not cycle.response_started
            if answer:  # the app's reads end (a client disconnect) and its writes go nowhere
                cycle.disconnected = True
                cycle.message_event.set()
        if answer:
            self.transport.write(error_response(status, reason, message))
        self.transport.close()


async def _refuse(message: bytes, scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app answering 431 with `message` and closing the connection."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(message)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": message})
