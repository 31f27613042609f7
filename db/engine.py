"""The one place a SQLAlchemy engine is built."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: DATABASE_URL's own query parameter (not libpq's, removed before connecting): ``?pgbouncer=true``
#: says connections go through a pooler in transaction mode, which (PgBouncer before 1.21) cannot
#: keep a session's prepared statements, so none are made (psycopg prepares a statement on its
#: fifth run otherwise).
POOLER_PARAMETER = "pgbouncer"


def sqlalchemy_url(url: str) -> sa.URL:
    """Accept the conventional ``postgres://`` / ``postgresql://`` URLs and pick psycopg 3."""
    parsed = make_url(
        url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
    )
    if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.difference_update_query([POOLER_PARAMETER])


def behind_pooler(url: str) -> bool:
    value = make_url(url.replace("postgres://", "postgresql://", 1)).query.get(POOLER_PARAMETER, "")
    return str(value).lower() in ("1", "true", "yes", "on")


def create_engine(
    url: str, *, pool_size: int = 5, application_name: str = "hbw", pre_ping: bool = True
) -> sa.Engine:
    """An engine whose sessions run in UTC, so ``date`` <-> ``timestamptz`` casts mean UTC days.
    Without `pre_ping` a connection is not tested when it is taken from the pool (a round trip
    saved): the caller retries what a lost connection fails (worker.http.reads).

    The time zone is set by a ``SET`` on each new connection, not by a startup ``options``
    parameter, which PgBouncer refuses; PgBouncer keeps a client's ``TimeZone`` on whichever
    server connection serves it."""
    engine = sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
        # Errors would otherwise carry the statement's parameters: a whole batch of heartbeats.
        hide_parameters=True,
        connect_args={
            "application_name": application_name,
            **({"prepare_threshold": None} if behind_pooler(url) else {}),
        },
    )
    sa.event.listen(engine, "connect", _in_utc)
    return engine


def _in_utc(dbapi_connection, _record) -> None:
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def psycopg_url(url: str) -> str:
    """A libpq URL (no SQLAlchemy driver suffix) for psql-like tools and psycopg.connect."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
