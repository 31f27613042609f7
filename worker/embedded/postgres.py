"""The embedded PostgreSQL 16 (binaries of the ``pgserver`` wheel), password-protected."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess

import psycopg

from worker.embedded.server import EmbeddedError, EmbeddedServer, binary, pid_alive, tail, write_private

PG_PORT = 54329
DATABASE = "hbw"

#: pg_hba.conf: a password (SCRAM) for every connection; the marker line names the password's
#: fingerprint, so a data directory whose password is not (or no longer) that one is updated.
HBA = """\
# heartbeat-worker: only with the password in {password_file} (readable by its owner alone)
# password {fingerprint}
host all all 127.0.0.1/32 scram-sha-256
"""


class EmbeddedPostgres(EmbeddedServer):
    name = "PostgreSQL"
    port_setting, url_setting = "HBW_EMBEDDED_PG_PORT", "DATABASE_URL"

    def __init__(self, root, port: int = PG_PORT, *, run_as: str | None = None) -> None:
        super().__init__(root, port)
        self.pgdata = root / "data"
        self.log = root / "postgres.log"
        # PostgreSQL will not run as root: use an unprivileged account then.
        self.run_as = run_as or (os.environ.get("HBW_EMBEDDED_USER", "nobody") if os.geteuid() == 0 else None)

    @property
    def url(self) -> str:
        return self._url(DATABASE)

    def _url(self, database: str, *, password: bool = True) -> str:
        secret = f":{self.password()}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        user = {}
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(binary("pgserver", "pginstall", "bin", args[0])), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            input=stdin,
            **user,
        )

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid when that server is alive."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if pid_alive(pid) else None

    def running(self) -> bool:
        postmaster = self._postmaster()
        if postmaster and postmaster[1] != self.port:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {self.pgdata} already runs on port {postmaster[1]}, "
                f"not {self.port}; stop it (hbw uses it while HBW_EMBEDDED_PG_PORT={postmaster[1]})"
            )
        return postmaster is not None

    def _owner(self) -> tuple[int, int] | None:
        if not self.run_as:
            return None
        entry = pwd.getpwnam(self.run_as)
        return entry.pw_uid, entry.pw_gid

    def _prepare_root(self) -> None:
        super()._prepare_root()
        if owner := self._owner():
            self._check_reachable_by(self.run_as)
            os.chown(self.root, *owner)

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
            # trust until _require_password() below replaces it, before the server ever starts
            options = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"]
            done = self._run("initdb", "-D", str(self.pgdata), *options)
            if done.returncode != 0:
                raise EmbeddedError(f"initdb failed in {self.pgdata}:\n{done.stderr.strip()}")
        self._require_password()
        options = f"-p {self.port} -h 127.0.0.1 -k ''"
        done = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        if done.returncode != 0:
            raise EmbeddedError(
                f"the embedded PostgreSQL did not start (log: {self.log}):\n{tail(self.log) or done.stderr}"
            )
        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _require_password(self) -> None:
        """Give the superuser this directory's password and accept nothing else (new data
        directories, those of older releases (trust), and after the password file was replaced).
        Runs while the server is stopped: the password goes in through single-user mode, never
        over a socket or a command line."""
        password = self.password()
        fingerprint = hashlib.sha256(password.encode()).hexdigest()[:16]
        hba = self.pgdata / "pg_hba.conf"
        if hba.exists() and f"# password {fingerprint}\n" in hba.read_text():
            return
        settings = ["-c", "password_encryption=scram-sha-256", "-c", "log_min_error_statement=panic"]
        done = self._run(
            "postgres",
            "--single",
            "-D",
            str(self.pgdata),
            *settings,
            "postgres",
            stdin=f"ALTER ROLE postgres PASSWORD '{password}'\n",
        )
        if done.returncode != 0 or "ERROR:" in done.stderr:
            raise EmbeddedError(
                f"could not set the embedded PostgreSQL's password in {self.pgdata}:\n"
                + done.stderr.replace(password, "***").strip()
            )
        write_private(
            hba, HBA.format(password_file=self.root / "password", fingerprint=fingerprint), self._owner()
        )

    def connects(self, *, with_password: bool) -> bool:
        try:
            psycopg.connect(self._url("postgres", password=with_password), connect_timeout=10).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        """`mode` is pg_ctl's: fast (clean), or immediate (as if the machine crashed). A fast stop
        that does not finish within its minute becomes immediate; if even that fails, says so."""
        postmaster = self._postmaster()
        done = self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")
        if postmaster and self._postmaster() and mode != "immediate":
            done = self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "-t", "60", "stop")
        if postmaster and self._postmaster():
            raise EmbeddedError(
                f"could not stop the embedded PostgreSQL (pid {postmaster[0]}, {self.pgdata}): "
                f"{done.stderr.strip() or 'pg_ctl gave no reason'}"
            )
