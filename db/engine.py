"""The one place a SQLAlchemy engine is built."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def sqlalchemy_url(url: str) -> sa.URL:
    """Accept the conventional ``postgres://`` / ``postgresql://`` URLs and pick psycopg 3."""
    parsed = make_url(
        url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
    )
    if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(
    url: str, *, pool_size: int = 5, application_name: str = "hbw", pre_ping: bool = True
) -> sa.Engine:
    """An engine whose sessions run in UTC, so ``date`` <-> ``timestamptz`` casts mean UTC days.
    Without `pre_ping` a connection is not tested when it is taken from the pool (a round trip
    saved): the caller retries what a lost connection fails (worker.http.reads)."""
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
        # Errors would otherwise carry the statement's parameters: a whole batch of heartbeats.
        hide_parameters=True,
        connect_args={"options": "-c timezone=UTC", "application_name": application_name},
    )


def psycopg_url(url: str) -> str:
    """A libpq URL (no SQLAlchemy driver suffix) for psql-like tools and psycopg.connect."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
