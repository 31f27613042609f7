"""Worker hosts as Linux network namespaces, made by the test itself (tests/faults/test_hosts.py).

A run names everything ``hbw`` + 4 hex digits (``hbw3f2a-sw``, ``-srv``, ``-h1``, ...): a *switch*
namespace with a bridge, a *server* namespace (PostgreSQL and Redis of the run's own) and N *host*
namespaces, each on the bridge by a veth pair, in a free 10.213.X.0/24 (server .1, hosts .11, ...).
A veth pair from the root namespace (.254), its only change, lets the test process (producer,
checks) reach the servers as any client would; it is never cut. Faults: :meth:`Network.cut`
disables a host's bridge port, dropping every frame while the links stay up, so connections hang
and time out as in a real partition (like ``tc netem loss 100%``; this kernel has no sch_netem);
:meth:`Network.kill_host` SIGKILLs a host's processes; :func:`faketime_env` skews its clock. A run
records its pid in /run/hbw-netns/; the next run removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

RUN_DIR = Path("/run/hbw-netns")


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    probe = f"hbwprobe{secrets.token_hex(2)}"
    try:
        ip("netns", "add", probe)
    except (OSError, RuntimeError) as e:  # not root, no iproute2, no namespaces in this container
        return f"`ip netns add` fails here: {e}"
    ip("netns", "del", probe, check=False)
    return None


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in namespace `ns`, until none is left."""
    for _ in range(200):
        pids = [int(p) for p in ip("netns", "pids", ns, check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise RuntimeError(f"processes in {ns} would not die")


def remove_abandoned() -> None:
    """Remove the namespaces of runs whose process is gone (killed before they could clean up)."""
    namespaces = ip("netns", "list", check=False).split()
    for marker in RUN_DIR.glob("hbw*"):
        with contextlib.suppress(ValueError, OSError):
            if Path(f"/proc/{int(marker.read_text())}").exists():
                continue
        for ns in (n for n in namespaces if n.startswith(f"{marker.name}-")):
            _kill_namespace(ns)
            ip("netns", "del", ns, check=False)
        ip("link", "del", f"{marker.name}r", check=False)
        marker.unlink(missing_ok=True)


class Network:
    """A switch, a server and `hosts` host namespaces. Processes started in them are tracked per
    namespace, each in a process group of its own. A context manager: close() removes it all."""

    def __init__(self, hosts: int) -> None:
        self.tag = f"hbw{secrets.token_hex(2)}"
        self.switch, self.server = f"{self.tag}-sw", f"{self.tag}-srv"
        self.hosts = [f"{self.tag}-h{i}" for i in range(1, hosts + 1)]
        used = ip("-4", "route", "show", "table", "all") + ip("-4", "addr")
        self.subnet = f"10.213.{random.choice([x for x in range(1, 255) if f'10.213.{x}.' not in used])}"
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self._made: list[str] = []

    def address(self, ns: str) -> str:
        return f"{self.subnet}.{1 if ns == self.server else 11 + self.hosts.index(ns)}"

    def port(self, ns: str) -> str:  # `ns`'s port on the bridge, in the switch namespace
        return "p-srv" if ns == self.server else f"p-h{self.hosts.index(ns) + 1}"

    def __enter__(self) -> Network:
        with contextlib.ExitStack() as undo:
            undo.callback(self.close)
            self.create()
            undo.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        remove_abandoned()
        RUN_DIR.mkdir(exist_ok=True)
        (RUN_DIR / self.tag).write_text(str(os.getpid()))
        sw = self.switch
        for ns in (sw, self.server, *self.hosts):
            ip("netns", "add", ns)
            self._made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        ends = [(["-n", ns], "eth0", self.port(ns), self.address(ns)) for ns in (self.server, *self.hosts)]
        for where, end, port, address in [*ends, ([], f"{self.tag}r", "p-root", f"{self.subnet}.254")]:
            ip(*where, "link", "add", end, "type", "veth", "peer", "name", port, "netns", sw)
            ip("-n", sw, "link", "set", port, "master", "br0", "up")
            ip(*where, "addr", "add", f"{address}/24", "dev", end)
            ip(*where, "link", "set", end, "up")

    def run(self, ns: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` in namespace `ns` (``ip netns exec``), in a new session (process group)."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], start_new_session=True, **popen_kwargs)
        self.procs.setdefault(ns, []).append(proc)
        return proc

    def cut(self, host: str, *, off: bool = True) -> None:
        """Drop every frame to and from `host` (its port disabled; its processes keep running)."""
        state = "0" if off else "3"  # disabled, forwarding
        argv = ["bridge", "-n", self.switch, "link", "set", "dev", self.port(host), "state", state]
        subprocess.run(argv, check=True, timeout=30, capture_output=True)

    def mend(self, host: str) -> None:
        self.cut(host, off=False)

    def kill_host(self, ns: str) -> None:
        """SIGKILL every process of `ns`: the process groups started there, then any straggler."""
        for proc in self.procs.get(ns, []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        _kill_namespace(ns)
        for proc in self.procs.get(ns, []):
            proc.wait(10)

    def close(self) -> None:
        for ns in reversed(self._made):
            with contextlib.suppress(Exception):
                self.kill_host(ns)
            ip("netns", "del", ns, check=False)  # its veth ends go with it, and their peers
        self._made.clear()
        ip("link", "del", f"{self.tag}r", check=False)
        (RUN_DIR / self.tag).unlink(missing_ok=True)


#: Python 3.11+ sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which libfaketime
#: 0.9.10 (Debian 12) turns into EINVAL when the monotonic clock is not faked (wolfcw/libfaketime
#: issue 426). Faking the monotonic clock too is worse: timed waits (threading.Event.wait, on
#: sem_clockwait) never end. So a skewed host's Pythons keep the real monotonic clock and sleep
#: with select(), which libfaketime leaves alone (and which refuses negative times too).
SLEEP_FIX = "import select, time\ntime.sleep = lambda seconds: select.select([], [], [], seconds) and None\n"


def faketime_env(offset: str, workdir: Path) -> dict[str, str]:
    """Environment moving the wall clock (time.time(), datetime.now(), `date`) of a process and of
    those it starts by `offset` ("+60s", "-60s"), leaving the monotonic clock alone."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (Debian: apt-get install faketime)")
    fix = workdir / "faketime-sleep"
    fix.mkdir(exist_ok=True)
    (fix / "sitecustomize.py").write_text(SLEEP_FIX)
    path = [str(fix), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"LD_PRELOAD": found[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": os.pathsep.join(path)}  # fmt: skip


def tails(directory: Path, lines: int = 30) -> str:
    """The last lines of every log under `directory` (what a failing test shows)."""
    out = []
    for log in sorted(directory.rglob("*.log")):
        out += [f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-lines:]]
    return "\n".join(out)


class Cluster:
    """PostgreSQL (Debian's, as the postgres account) and Redis of the run's own in the server
    namespace, listening on its address only; `hbw` run on the hosts against them."""

    def __init__(self, net: Network, workdir: Path) -> None:
        self.net, self.workdir, self.servers = net, workdir, []
        self.namespace = f"hbw-hosts-{net.tag}"
        self.database_url = f"postgresql://postgres@{net.address(net.server)}:5432/postgres"
        self.redis_url = f"redis://{net.address(net.server)}:6379/0"

    def start_servers(self) -> None:
        from tests.replica import _bin  # PostgreSQL's binaries (skips the test when there are none)

        net, root, address = self.net, self.workdir / "servers", self.net.address(self.net.server)
        root.mkdir()
        shutil.chown(root, "postgres", "postgres")  # PostgreSQL will not run as root
        pgdata, ids = root / "pg", {"user": "postgres", "group": "postgres"}
        subprocess.run([_bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--no-sync"],
                       check=True, capture_output=True, cwd=root, **ids)  # fmt: skip
        with open(pgdata / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '{address}'\nport = 5432\nunix_socket_directories = '{root}'\n"
                       "fsync = off\nmax_connections = 200\n")  # fmt: skip
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {net.subnet}.0/24 trust\n")
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        for name, argv in {
            "postgres": [*as_postgres, _bin("postgres"), "-D", str(pgdata)],
            "redis": [shutil.which("redis-server") or "redis-server", "--bind", address, "--port", "6379",
                      "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(root)],
        }.items():  # fmt: skip
            with open(root / f"{name}.log", "w") as log:
                self.servers.append(net.run(net.server, argv, stdout=log, stderr=subprocess.STDOUT, cwd=root))
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.database_url, connect_timeout=2).close()
                redis.Redis.from_url(self.redis_url, socket_timeout=2).ping()
                break
            except (psycopg.Error, redis.RedisError) as e:
                if any(p.poll() is not None for p in self.servers) or time.monotonic() > deadline:
                    raise RuntimeError(f"the servers did not start: {e}\n{tails(root)}") from None
                time.sleep(0.2)
        code, out = self.hbw(net.server, "db", "init")
        assert code == 0, out

    def stop_servers(self) -> None:
        for proc, sig in zip(self.servers, (signal.SIGINT, signal.SIGTERM), strict=False):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                proc.send_signal(sig)  # PostgreSQL: a fast shutdown, which removes its shared memory
                proc.wait(30)  # (Network.close kills what is left)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HBW_", "FAKETIME", "LD_PRELOAD"))}
        return {**base, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "HBW_REDIS_NAMESPACE": self.namespace, "HBW_METRICS_PORT": "0", "HBW_LOG_FORMAT": "json",
                **(extra or {})}  # fmt: skip

    def hbw(self, ns: str, *args: str, env_extra: dict | None = None) -> tuple[int, str]:
        """Run `hbw ARGS` in namespace `ns` to its end: (exit code, output)."""
        proc = self.net.run(ns, [sys.executable, "-m", "worker.cli", *args], env=self.env(env_extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        out = proc.communicate(timeout=180)[0]
        return proc.returncode, out

    def start_worker(self, host: str, *, env_extra: dict | None = None, faketime: str | None = None,
                     processes: int = 1, threads: int = 2) -> subprocess.Popen:  # fmt: skip
        """`hbw worker` on `host`, logging (JSON) to ``proc.log``, once its processes have started.
        `faketime` ("+60s") skews the host's wall clock (libfaketime)."""
        env = self.env(env_extra) | (faketime_env(faketime, self.workdir) if faketime else {})
        log_path = self.workdir / f"{host}-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "worker.cli", "worker", "-p", str(processes), "-t", str(threads)]
        with open(log_path, "w") as log:
            proc = self.net.run(host, argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log = log_path
        deadline = time.monotonic() + 60
        while log_path.read_text(errors="replace").count('"worker.started"') < processes:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker on {host} did not start:\n{tails(self.workdir)}")
            time.sleep(0.1)
        return proc


@contextlib.contextmanager
def cluster(hosts: int) -> Iterator[Cluster]:
    """`hosts` worker hosts, and the server namespace with PostgreSQL and Redis up and the schema
    applied (`hbw db init`); skips where namespaces cannot be made. Everything is removed after,
    whatever happens; the logs are printed when the test failed."""
    if reason := unavailable():
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="hbw-hosts-"))
    workdir.chmod(0o755)  # the postgres account reaches its directory in it
    try:
        with Network(hosts) as net:
            result = Cluster(net, workdir)
            try:
                result.start_servers()
                yield result
            except BaseException:
                print(tails(workdir))
                raise
            finally:
                for host in net.hosts:
                    net.kill_host(host)
                result.stop_servers()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
