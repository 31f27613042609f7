"""That every month a batch of heartbeats falls in has its partition, before the batch goes in.

Months are made ahead (`hbw db init`, worker start: hbw_ensure_months_ahead), so this is a check
in this process's memory for almost every batch; a batch reaching another month (a late
heartbeat, an import of history) makes its partitions first, in the store's transaction
(schema.sql: hbw_ensure_partitions).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from db import partitions as db_partitions

#: Per database, the months (year * 12 + month - 1) this process knows have a partition.
_covered: dict[str, set[int]] = {}


def _month(epoch: float) -> int:
    day = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return day.year * 12 + day.month - 1


def _date(month: int) -> dt.date:
    return dt.date(month // 12, month % 12 + 1, 1)


def ensure_months(conn: sa.Connection, heartbeats: Sequence[dict[str, Any]]) -> None:
    """Make the partitions of the batch's months that this process does not know of."""
    times = [heartbeat["time"] for heartbeat in heartbeats]
    first, last = _month(min(times)), _month(max(times))
    months = {first, last} if last - first <= 1 else {_month(t) for t in times}
    ensure(conn, months)


def ensure(conn: sa.Connection, months: Iterable[int]) -> None:
    covered = _covered.setdefault(str(conn.engine.url), set())
    missing = set(months) - covered
    if missing:
        db_partitions.ensure_partitions(conn, [_date(m) for m in missing])
        covered.update(missing)


def forget(conn: sa.Connection) -> None:
    """A store failed for want of a partition (the transaction that made it rolled back): check
    again next time."""
    _covered.pop(str(conn.engine.url), None)
