"""`hbw serve` over real HTTP: the limits on connections and addresses. Oversized headers, slow
clients and clients that leave mid-body, and the servers listening on loopback unless told."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port
from tests.web_client import BULK, basic, post, queued


def raw_request(url: str, data: bytes, *, read_timeout: float = 30) -> bytes:
    """Send `data` as is on a new connection; everything the server answers until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def head(path: str, *headers: str, length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: hbw", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def basic_header(key: str) -> str:
    return "Authorization: " + basic(key)["Authorization"]


def test_request_headers_over_the_limit_get_431_before_authentication(web, key, broker):
    limit = 16 * 1024  # HBW_HTTP_MAX_HEADER_BYTES's default
    # a whole head over the limit, arriving in one piece: 431, not 401 (no key was looked at)
    answer = raw_request(web, head(BULK, "X-Pad: " + "a" * (limit + 1), length=2) + b"[]")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert f"larger than {limit} bytes".encode() in answer

    # a header that never ends (a 100 MB one was read to its end before): the server answers and
    # closes once the limit is passed, without waiting for the rest
    host, port = web.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {BULK} HTTP/1.1\r\nHost: hbw\r\nX-Pad: ".encode())
        try:
            for _ in range(128):  # 8 MB, never the end of the header
                sock.sendall(b"a" * 65536)
            sock.settimeout(10)
            answer = sock.recv(65536)  # its 431, or the end of the connection
            closed = answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        except TimeoutError:
            closed = False
    assert closed, "the server kept reading a header that never ends"

    # below the limit, with a body far larger than it in the same reads, a request goes through
    body = json.dumps([{"entity": "a.py", "time": time.time(), "pad": "x" * 1_000_000}]).encode()
    headers = [basic_header(key), "Content-Type: application/json", "X-Pad: " + "a" * (limit - 1024)]
    answer = raw_request(web, head(BULK, *headers, "Connection: close", length=len(body)) + body)
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert queued(broker) == 1


class Recorder(asyncio.Protocol):
    """Keeps every byte the server sent, even when the connection then ends in a reset (a
    StreamReader would raise instead and drop them)."""

    def __init__(self) -> None:
        self.received, self.closed = b"", asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def slow_client(url: str, first: bytes, drip: bytes, seconds: float) -> tuple[bytes, bool]:
    """Send `first`, then `drip` a byte at a time over `seconds` (or nothing more for that long);
    (the answer, whether the server closed the connection while the client was still at it)."""
    host, port = url.removeprefix("http://").split(":")
    transport, client = await asyncio.get_running_loop().create_connection(Recorder, host, int(port))
    try:
        transport.write(first)
        for byte in drip:
            if client.closed.done():
                break
            transport.write(bytes([byte]))
            await asyncio.sleep(seconds / len(drip))
        if not drip:
            await asyncio.wait([client.closed], timeout=seconds)
        cut_off = client.closed.done()
        await asyncio.wait([client.closed], timeout=10)
        return client.received, cut_off
    finally:
        transport.close()


@pytest.mark.parametrize(
    "web", [{"http_header_timeout_seconds": 0.5, "http_body_timeout_seconds": 0.5}], indirect=True
)
def test_slow_clients_are_cut_off_at_the_header_and_body_deadlines(web, key, broker):
    """Slow loris: connections that send nothing, or their headers or body a byte at a time, are
    answered 408 and closed at their deadline (0.5 s here), long before they are done (15 s);
    meanwhile a normal client is served."""
    auth = basic_header(key)
    slow_head = (head(BULK, auth).removesuffix(b"\r\n"), b"X-Slow: " + b"a" * 60 + b"\r\n\r\n")
    slow_body = (head(BULK, auth, length=100), b'[{"entity": "a.py", "time": 1}]'.ljust(100))

    async def run():
        clients = [slow_client(web, b"", b"", 15) for _ in range(20)]  # idle: sends nothing
        clients += [slow_client(web, *slow_head, 15) for _ in range(20)]
        clients += [slow_client(web, *slow_body, 15) for _ in range(20)]
        tasks = [asyncio.ensure_future(client) for client in clients]
        await asyncio.sleep(0.2)
        ok = await asyncio.to_thread(post, web + BULK, [{"entity": "b.py", "time": time.time()}], basic(key))
        return ok[0], await asyncio.gather(*tasks)

    status, results = asyncio.run(run())
    assert status == 201
    for i, (answer, cut_off) in enumerate(results):
        kind = ("idle", "slow headers", "slow body")[i // 20]
        assert cut_off, f"{kind}: the server kept the connection until the client was done"
        assert answer.startswith(b"HTTP/1.1 408 "), (kind, answer[:80])
        assert (b"body" if kind == "slow body" else b"headers") in answer
    assert queued(broker) == 1  # only the normal client's heartbeat


def test_a_client_that_disconnects_mid_body_is_not_an_error(web, key, log_events):
    with socket.create_connection(web.removeprefix("http://").split(":")) as sock:
        sock.sendall(head(BULK, basic_header(key), length=1000) + b'[{"entity": ')
    deadline = time.monotonic() + 20
    while not any(e["event"] in ("http.client_disconnected", "Exception in ASGI application\n")
                  for e in log_events()):  # fmt: skip
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.05)
    assert [e for e in log_events() if e["level"] in ("error", "critical")] == []
    assert [e["event"] for e in log_events() if e["event"].startswith("http.")] == [
        "http.client_disconnected"
    ]


def reachable(host: str, port: int) -> bool:
    """127.0.0.2 stands for any address other than 127.0.0.1: a socket bound to 0.0.0.0 answers
    there, one bound to 127.0.0.1 does not."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_hbw_serve_listens_on_loopback_unless_told(settings):
    port = free_port()
    command = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "-w", "2"]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not reachable("127.0.0.1", port):
            assert server.poll() is None and time.monotonic() < deadline, "hbw serve did not start"
            time.sleep(0.1)
        assert not reachable("127.0.0.2", port)
        # the limits hold in `hbw serve`'s own processes too
        answer = raw_request(f"http://127.0.0.1:{port}", head(BULK, "X-Pad: " + "a" * 20_000, length=0))
        assert answer.startswith(b"HTTP/1.1 431 ")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_worker_metrics_listen_on_loopback_unless_told(settings):
    from worker.cli.workers import metrics_server

    for host, elsewhere in ((None, False), ("0.0.0.0", True)):
        update = {"metrics_port": free_port(), **({"metrics_host": host} if host else {})}
        metrics = settings.model_copy(update=update)
        with metrics_server(metrics, 1):
            assert reachable("127.0.0.1", metrics.metrics_port)
            assert reachable("127.0.0.2", metrics.metrics_port) is elsewhere
