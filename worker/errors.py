"""What a command tells its user when it fails: one line and an exit code (docs/cli.md, Exit codes).

:class:`HbwError` is the root of the failures a user can act on; its message is that one line and
its ``exit_code`` what the process exits with. :func:`explain` turns the exceptions the libraries
raise (a missing table, a database that does not exist, a server that does not answer) into one,
so no command needs its own handler and `hbw`'s ``main`` prints them all the same way.

The rule for exit codes: a server that does not answer (refused, timed out, starting up) is a
failure (1): it may answer next time. Anything only a change of configuration fixes (a missing
schema or database, a refused login, an unknown host, a malformed URL) is 3.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import redis
import sqlalchemy as sa
from pydantic import ValidationError

from db.errors import redact
from jobs.errors import Refused
from worker.logs import get_logger
from worker.runtime.redis_memory import RedisOutOfMemory, is_out_of_memory
from worker.settings import EMBEDDED, Settings, get_settings

log = get_logger("hbw.cli")

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class HbwError(Exception):
    """A failure the user can act on: ``str(error)`` says what is wrong and what to do."""

    exit_code = EXIT_FAILED


class ConfigError(HbwError):
    """Only a change of configuration fixes it (schema, URL, data directory, arguments)."""

    exit_code = EXIT_CONFIG


class Rejected(HbwError):
    """A request refused for what it asks (jobs.errors.Refused: an alias chain, an unknown key)."""

    exit_code = EXIT_REJECTED


class UsageError(Rejected):
    """The command line asks for something that makes no sense (bad usage, like argparse's)."""


class Unavailable(HbwError):
    """A server did not answer; running the command again later may succeed."""


_PG_LOGIN = re.compile(r'authentication failed|role "[^"]*" does not exist|no pg_hba.conf entry|password')
_PG_NO_DATABASE = re.compile(r'database "[^"]*" does not exist')
_PG_DOWN = (
    "connection refused",
    "timeout expired",
    "timed out",
    "no such file or directory",
    "is the server running",
    "starting up",
    "shutting down",
    "closed the connection",
    "no route to host",
    "network is unreachable",
    "terminating connection",
)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, as a library gives it (without SQLAlchemy's wrapping)."""
    text = str(getattr(error, "orig", None) or error).strip()
    text = text.removeprefix("connection failed: ")
    return redact(text.splitlines()[0].strip() if text else type(error).__name__)


def explain(error: BaseException, database_url: str | None, redis_url: str | None) -> HbwError | None:
    """The one-line :class:`HbwError` for a failure we know, or None for one we do not."""
    if isinstance(error, HbwError):
        return error
    if isinstance(error, Refused):
        return Rejected(str(error))
    if isinstance(error, sa.exc.DBAPIError | psycopg.Error):
        return _postgres(getattr(error, "orig", error), _where(database_url))
    if isinstance(error, redis.RedisError):
        return _redis(error, _where(redis_url))
    return None


def describe(error: BaseException, settings: Settings | None = None) -> str:
    """One line for `error`: what is wrong and what to do when we know, else what it was."""
    settings = settings or get_settings()  # after `servers_for`, the embedded servers' URLs
    problem = explain(error, settings.database_url, settings.redis_url)
    return str(problem) if problem else f"{type(error).__name__}: {first_line(error)}"


def _explain_configured(error: BaseException) -> HbwError | None:
    settings = get_settings()  # after `servers_for`, the embedded servers' URLs
    return explain(error, settings.database_url, settings.redis_url)


def _postgres(error: BaseException, where: dict[str, str]) -> HbwError:
    reason, lowered = first_line(error), first_line(error).lower()
    server = f"PostgreSQL at {where['server']}"
    code = getattr(error, "sqlstate", None) or ""
    if code.startswith("42") and "does not exist" in lowered:  # undefined table, column or function
        return ConfigError(
            f"the database {where['database']} has no heartbeat-worker schema, or an older one "
            f"({reason}): run `hbw db init`"
        )
    if _PG_NO_DATABASE.search(reason):
        return ConfigError(
            f"{server} has no database {where['database']}: create it (createdb) or fix DATABASE_URL"
        )
    if isinstance(error, psycopg.OperationalError):
        if "failed to resolve host" in lowered or "could not translate host name" in lowered:
            return ConfigError(f"cannot resolve the PostgreSQL host {where['host']}: check DATABASE_URL")
        if _PG_LOGIN.search(reason):
            return ConfigError(f"{server} refused the login ({_tail(reason)}): check DATABASE_URL")
        if any(word in lowered for word in _PG_DOWN) or not code:
            return Unavailable(
                f"cannot connect to {server} ({_tail(reason)}): is it running? check DATABASE_URL"
            )
    return HbwError(f"{server} failed: {reason}")


def _redis(error: redis.RedisError, where: dict[str, str]) -> HbwError:
    reason, lowered = first_line(error), first_line(error).lower()
    server = f"Redis at {where['server']}"
    if isinstance(error, redis.AuthenticationError) or "wrongpass" in lowered or "noauth" in lowered:
        return ConfigError(f"{server} refused the login ({reason}): check the password in REDIS_URL")
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return ConfigError(f"cannot resolve the Redis host {where['host']}: check REDIS_URL")
    if is_out_of_memory(error) or isinstance(error, RedisOutOfMemory):
        return HbwError(
            f"{server} is out of memory (maxmemory reached) and refuses writes: raise maxmemory or free "
            "space (docs/reliability.md)"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return Unavailable(f"cannot connect to {server} ({_tail(reason)}): is it running? check REDIS_URL")
    return HbwError(f"{server} failed: {reason}")


def _tail(reason: str) -> str:
    """'connection to server at "h", port 1 failed: Connection refused' -> 'connection refused'."""
    tail = reason.rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip().rstrip(".")
    tail = re.sub(r"^Error -?\d+ connecting to \S+\s*", "", tail).strip(". ") or tail
    return tail[:1].lower() + tail[1:]


def _where(url: str | None) -> dict[str, str]:
    """Host, port and database of a URL, never its user or password."""
    parts = urlsplit(url or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ("localhost" if parts.scheme != "unix" else parts.path)
    return {
        "server": f"{host}:{port}" if port else host,
        "host": f'"{host}"',
        "database": f'"{parts.path.lstrip("/")}"',
    }


def check_urls(database_url: str | None, redis_url: str | None) -> None:
    """Refuse a malformed DATABASE_URL or REDIS_URL before anything tries to use it."""
    from db.engine import sqlalchemy_url

    if database_url and database_url != EMBEDDED:
        try:
            backend = sqlalchemy_url(database_url).get_backend_name()
        except sa.exc.ArgumentError:
            backend = None
        if backend != "postgresql":
            raise ConfigError(
                "DATABASE_URL is not a PostgreSQL URL (expected postgresql://user@host:5432/db)"
            )
    if redis_url and redis_url != EMBEDDED and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL is not a Redis URL (expected redis://host:6379/0)")


def settings_problem(error: ValidationError) -> str:
    """One line naming each bad setting by its environment variable (never its value: it may be secret)."""
    problems = []
    for err in error.errors(include_url=False):
        if not err["loc"]:  # a rule across settings names them itself
            problems.append(err["msg"].removeprefix("Value error, "))
            continue
        name = str(err["loc"][0])
        problems.append(f"{name if name.isupper() else 'HBW_' + name.upper()}: {err['msg']}")
    return "configuration error: " + "; ".join(problems)


def reported(command: Callable[[], int]) -> int:
    """Run `command` and return its exit code; any exception becomes one line on stderr.

    A failure we know says what is wrong and what to do; anything else says what it was, and its
    traceback goes to the log at DEBUG (``HBW_LOG_LEVEL=DEBUG``), never onto the user's terminal.
    """
    try:
        code = command()
        sys.stdout.flush()  # here, not at exit, where a closed pipe could not be reported
        return code
    except KeyboardInterrupt:
        print("hbw: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hbw dlq list | head -1`: the reader is gone, nobody to tell
        with contextlib.suppress(OSError, ValueError):  # and nothing left to flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as error:
        problem = _explain_configured(error)
        log.debug("command.failed", error=type(error).__name__, known=problem is not None, exc_info=True)
        if problem is None:
            problem = HbwError(
                f"unexpected error: {type(error).__name__}: {first_line(error)} "
                "(HBW_LOG_LEVEL=DEBUG logs the traceback)"
            )
        print(f"hbw: {redact(str(problem))}", file=sys.stderr)
        return problem.exit_code
