"""Redis with Sentinel, private to a test: a primary, its replicas and three sentinels on free
ports (Debian's redis-server, run in sentinel mode), stopped and removed after."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port

MASTER = "hbwmaster"


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Cluster:
    home: Path
    sentinel_ports: list[int]
    servers: dict[int, subprocess.Popen] = field(default_factory=dict)  # port -> redis-server

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for this cluster."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=2)
                return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
        raise AssertionError("no sentinel answers")

    def start_server(self, port: int, *args: str) -> None:
        (self.home / str(port)).mkdir(exist_ok=True)
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.home / str(port)), *args]  # fmt: skip
        log = open(self.home / f"{port}.log", "ab")  # noqa: SIM115 (kept open while the server runs)
        self.servers[port] = subprocess.Popen(command, stdout=log, stderr=log)
        wait_until(lambda: redis.Redis(port=port).ping(), 10, f"redis-server on {port}")

    def kill(self, port: int) -> None:
        """SIGKILL: the server and its unreplicated writes are gone at once."""
        self.servers[port].send_signal(signal.SIGKILL)
        self.servers[port].wait()

    def replica_ports(self) -> list[int]:
        master = self.master_port()
        return [port for port in self.servers if port not in self.sentinel_ports and port != master]

    def pause(self, port: int, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT): a server that neither answers nor forgets."""
        self.servers[port].send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def restart(self, port: int) -> None:
        """The killed server starts again, empty (it keeps nothing on disk); the sentinels make it
        a replica of the new master."""
        self.start_server(port)

    def failed_over(self, old: int) -> bool:
        """A sentinel names another master, and that server says it is one."""
        new = self.master_port()
        return new != old and redis.Redis(port=new).role()[0] == b"master"


@contextlib.contextmanager
def sentinel_cluster(replicas: int = 1, down_after_ms: int = 1000) -> Iterator[Cluster]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    home = Path(tempfile.mkdtemp(prefix="hbw-sentinel-"))
    cluster = Cluster(home, [free_port() for _ in range(3)])
    primary = free_port()
    try:
        cluster.start_server(primary)
        for _ in range(replicas):
            replica = free_port()
            cluster.start_server(replica, "--replicaof", "127.0.0.1", str(primary))
            synced = lambda r=replica: redis.Redis(port=r).info("replication")["master_link_status"] == "up"  # noqa: E731
            wait_until(synced, 20, "the replica to sync")
        for port in cluster.sentinel_ports:
            conf = home / f"sentinel-{port}.conf"  # sentinels rewrite theirs: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            log = open(home / f"sentinel-{port}.log", "ab")  # noqa: SIM115
            cluster.servers[port] = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=log
            )

        def settled() -> bool:
            for port in cluster.sentinel_ports:
                client = redis.Redis(port=port)
                if (
                    len(client.sentinel_sentinels(MASTER)) < 2
                    or len(client.sentinel_slaves(MASTER)) < replicas
                ):
                    return False
            return True

        wait_until(settled, 30, "the sentinels to find each other and the replica")
        yield cluster
    finally:
        for process in cluster.servers.values():
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)
