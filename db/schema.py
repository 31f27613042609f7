"""Applying ``schema.sql`` and checking which version a database has."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import sqlalchemy as sa

#: Arbitrary constant for the advisory lock that serialises concurrent `hbw db init` runs.
_INIT_LOCK = 0x4842575F494E4954  # "HBW_INIT"


@cache
def schema_sql() -> str:
    return resources.files("db").joinpath("schema.sql").read_text(encoding="utf-8")


@cache
def expected_version() -> int:
    match = re.search(r"^-- schema-version: (\d+)$", schema_sql(), re.MULTILINE)
    if not match:
        raise RuntimeError("schema.sql has no '-- schema-version: N' line")
    return int(match.group(1))


def apply_schema(conn: sa.Connection) -> int:
    """Apply schema.sql (idempotent) and record its version; returns that version."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK})
    # Sent verbatim on the driver connection: no bind parameters, so '%' in the SQL is literal.
    conn.connection.driver_connection.execute(schema_sql())
    version = expected_version()
    conn.execute(
        sa.text(
            "INSERT INTO hbw_schema (version) VALUES (:v) "
            "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, applied_at = now()"
        ),
        {"v": version},
    )
    return version


def installed_version(conn: sa.Connection) -> int | None:
    """The version recorded by `hbw db init`, or None when the schema was never applied."""
    exists = conn.execute(sa.text("SELECT to_regclass('hbw_schema') IS NOT NULL")).scalar_one()
    if not exists:
        return None
    return conn.execute(sa.text("SELECT version FROM hbw_schema")).scalar_one_or_none()
