"""Which database errors are about the database rather than the data, and what a log line or a
stored failure keeps of an error (:func:`describe_error`, :func:`redact`).

A transient error (the server is away or restarting, a deadlock, a serialization failure, a lock
or statement timeout, resources running out) may not happen again: the work is retried as it is.
Any other error comes from what the work touches (a value an index cannot hold, a constraint, a
bug met by one user's data) and would happen again on every retry: the work is narrowed down to
what fails, and that is set aside with its reason.
"""

from __future__ import annotations

import re

import psycopg
import sqlalchemy as sa

#: SQLSTATE classes of transient errors: connection exception, transaction rollback (deadlock,
#: serialization), insufficient resources, object not in prerequisite state (lock not available),
#: operator intervention (shutdown, statement timeout), system error (I/O).
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})


def is_transient(error: BaseException) -> bool:
    """True for a database error that may not happen again; False for one the data causes (or
    for any other exception, which says nothing about the database)."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    driver = getattr(error, "orig", error)
    if not isinstance(driver, psycopg.Error):
        return isinstance(error, sa.exc.DisconnectionError | sa.exc.TimeoutError)
    state = driver.sqlstate
    if state is None:  # not from the server: lost contact (transient), or refused by the driver itself
        return isinstance(driver, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in TRANSIENT_CLASSES


_URL_CREDENTIALS = re.compile(r"(\w+://[^/:@\s]*:)[^@\s]*@")


def redact(text: str | None) -> str | None:
    """`text` (a URL, or a message with URLs in it) with every URL's password replaced by ***."""
    return _URL_CREDENTIALS.sub(r"\1***@", text) if text else text


def describe_error(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most `limit` characters: what a log line or a dead
    letter keeps of an error. SQLAlchemy's messages carry the statement and its parameters (a
    whole batch of heartbeats), PostgreSQL's a DETAIL with row values; neither belongs in a log."""
    inner = getattr(error, "orig", None) or error  # SQLAlchemy's wrapper -> the driver's error
    lines = str(inner).strip().splitlines()
    line = f"{type(inner).__name__}: {redact(lines[0])}" if lines else type(inner).__name__
    return line if len(line) <= limit else f"{line[: limit - 3]}..."
