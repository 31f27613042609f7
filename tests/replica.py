"""A PostgreSQL primary and a streaming replica of it, private to a test (Debian's PostgreSQL
binaries, run as the postgres account when the tests run as root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed here")
    return found[-1]


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL), both for the database `postgres`; stopped and removed after."""
    home = Path(tempfile.mkdtemp(prefix="hbw-replica-"))
    user = {}
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        entry = pwd.getpwnam("postgres")
        os.chown(home, entry.pw_uid, entry.pw_gid)
        user = {"user": entry.pw_uid, "group": entry.pw_gid}

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=home, **user)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-500:]}")

    ports = {"primary": free_port(), "replica": free_port()}
    try:
        run(_bin("initdb"), "-D", str(home / "primary"), "-U", "postgres", "--auth=trust", "--no-sync")
        with open(home / "primary" / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['primary']}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{home}'\nwal_level = replica\nfsync = off\n")  # fmt: skip
        run(_bin("pg_ctl"), "-D", str(home / "primary"), "-l", str(home / "primary.log"), "-w", "start")
        run(_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(ports["primary"]), "-U", "postgres",
            "-D", str(home / "replica"), "-R", "-X", "stream")  # fmt: skip
        with open(home / "replica" / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['replica']}\n")
        run(_bin("pg_ctl"), "-D", str(home / "replica"), "-l", str(home / "replica.log"), "-w", "start")
        yield tuple(
            f"postgresql://postgres@127.0.0.1:{ports[name]}/postgres" for name in ("primary", "replica")
        )
    finally:
        for name in ("replica", "primary"):
            if (home / name / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    run(_bin("pg_ctl"), "-D", str(home / name), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


def wait_replayed(primary: sa.Engine, replica: sa.Engine, timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    with primary.connect() as conn:
        target = conn.execute(sa.text("SELECT pg_current_wal_lsn()")).scalar_one()
    deadline = time.monotonic() + timeout
    while True:
        with replica.connect() as conn:
            query = sa.text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)")
            if conn.execute(query, {"lsn": target}).scalar_one():
                return
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)
