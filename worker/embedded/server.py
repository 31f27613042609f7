"""What both embedded servers share: a private directory, a password, and leases."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class EmbeddedError(Exception):
    """The embedded servers cannot be used; the message says why and what to do."""


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/heartbeat-worker")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "heartbeat-worker"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "heartbeat-worker"


def binary(package: str, *parts: str) -> Path:
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


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill() said enough
    return state not in ("Z", "X")


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_private(
    path: Path, text: str, owner: tuple[int, int] | None = None, *, keep_existing: bool = False
) -> None:
    """Write `path` atomically with mode 600 (owned by `owner`, a (uid, gid), when given); with
    `keep_existing`, a file that is there already (another process was first) stays."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        if owner:
            os.fchown(f.fileno(), *owner)
        f.write(text)
    if not keep_existing:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


class EmbeddedServer:
    """A server in ``root`` shared by every process that holds a lease on it.

    ``root`` is private (mode 700) and holds the server's password in ``password`` (mode 600,
    owned by the account that runs hbw): only that account (and root) can use the server.
    """

    name = "server"
    port_setting = url_setting = ""

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
        """Stop the server, or raise EmbeddedError saying it could not."""
        raise NotImplementedError

    def connects(self, *, with_password: bool) -> bool:
        """Whether the running server takes a connection (with this directory's password or none)."""
        raise NotImplementedError

    # -- shared lifecycle -----------------------------------------------------------------------
    def acquire(self) -> str:
        """Start the server unless it runs already, and hold a lease on it; returns its URL."""
        self._prepare_root()
        with self._locked():
            if self.running():
                self._check_access()
            else:
                if _port_in_use(self.port):
                    raise EmbeddedError(
                        f"cannot start the embedded {self.name}: port {self.port} on 127.0.0.1 is taken by "
                        f"another program. Stop it, choose another port ({self.port_setting}), "
                        f"or point {self.url_setting} at a server"
                    )
                self.start()
            (self.root / "holders").mkdir(exist_ok=True)
            (self.root / "holders" / str(os.getpid())).touch()
        return self.url

    def release(self) -> list[int]:
        """Give up this process's lease and stop the server unless other live processes hold one.
        Returns those processes: empty when the server was stopped (or was not running)."""
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                (self.root / "holders" / str(os.getpid())).unlink()
            others = self.holders()
            if others or not self.running():
                return others
            self.stop()
            return []

    def _check_access(self) -> None:
        """A server started by another command must want this directory's password, and only it
        (a release before passwords started it without one: refuse to use it until it stops)."""
        if not self.connects(with_password=True):
            raise EmbeddedError(
                f"the embedded {self.name} on port {self.port} refuses the password in "
                f"{self.root / 'password'}: stop the hbw commands using it, then retry"
            )
        if self.connects(with_password=False):
            raise EmbeddedError(
                f"the embedded {self.name} on port {self.port} lets anybody in without a password "
                f"(an older heartbeat-worker started it): stop the hbw commands using it, then retry "
                f"(the next start requires the password)"
            )

    def holders(self) -> list[int]:
        """Live processes holding a lease (leases of dead processes are dropped)."""
        alive = []
        for entry in (self.root / "holders").glob("*") if (self.root / "holders").exists() else []:
            pid = int(entry.name) if entry.name.isdigit() else 0
            if pid and pid_alive(pid):
                alive.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return alive

    def password(self) -> str:
        """This server's password: random, made once, kept in ``root/password`` for its owner only."""
        path = self.root / "password"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            self._prepare_root()
            write_private(path, secrets.token_hex(32) + "\n", keep_existing=True)
            return self.password()
        except OSError as e:
            raise EmbeddedError(f"cannot read {path}: {e.strerror}") from None
        with os.fdopen(fd) as f:
            info, text = os.fstat(f.fileno()), f.read().strip()
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise EmbeddedError(
                f"{path} holds the embedded {self.name}'s password, so it must be yours and private "
                f"(chmod 600 {path}), or delete it for a new password"
            )
        if not re.fullmatch(r"[A-Za-z0-9]{32,}", text):
            raise EmbeddedError(f"{path} does not hold a password hbw made: delete it for a new one")
        return text

    def _prepare_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
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
