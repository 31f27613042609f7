"""The raw heartbeats' monthly partitions (schema.sql: hbw_ensure_partitions; db/sql/partitions.sql)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import sqlalchemy as sa

from db.queries import query

_PARTITION = re.compile(r"heartbeats_y\d{4}m\d{2}")


def ensure_partitions(conn: sa.Connection, months: Iterable[dt.date], parent: str = "heartbeats") -> int:
    """A partition for each of these months (any day of it) that has none; returns how many were
    made (0 when `parent` is not partitioned)."""
    params = {"months": sorted(set(months)), "parent": parent}
    return conn.execute(query("ensure_partitions"), params).scalar_one()


def ensure_months_ahead(conn: sa.Connection) -> int:
    """This month's partition and the next two (a worker starting)."""
    return conn.execute(query("ensure_months_ahead")).scalar_one()


def is_partitioned(conn: sa.Connection, parent: str = "heartbeats") -> bool:
    return conn.execute(query("is_partitioned"), {"parent": parent}).scalar_one()


Partition = tuple[str, dt.datetime, dt.datetime]


def select_partitions(conn: sa.Connection, parent: str = "heartbeats") -> list[Partition]:
    """(name, lower bound, upper bound) of each partition, oldest first."""
    return [tuple(row) for row in conn.execute(query("select_partitions"), {"parent": parent})]


def drop_partition(conn: sa.Connection, name: str) -> int:
    """Drop a partition whose rows are no longer wanted (`hbw prune`): its raw heartbeats go at once,
    without a row deleted or vacuumed. Returns how many there were."""
    if not _PARTITION.fullmatch(name):
        raise ValueError(f"not a heartbeats partition: {name!r}")
    rows = conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
    conn.execute(sa.text(f'DROP TABLE "{name}"'))
    return rows


def heartbeat_bytes(conn: sa.Connection) -> tuple[int, int]:
    """(bytes on disk, rows) of the raw heartbeats, all partitions."""
    return tuple(conn.execute(query("heartbeat_bytes")).one())
