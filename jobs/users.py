"""Users' own settings: the time zone their days are counted in (docs/spec.md, section 3).

Changing it moves every heartbeat of the user to the day of the new calendar, so the user's
history is laid out again: in one transaction, holding every lock of the user (no store or
recomputation of theirs runs meanwhile), their day rows and pending work go, their user-days come
back from the raw heartbeats in the new zone, all stale; the caller sends the recompute messages
after the commit (the sweeper sends them if it cannot), and the workers rebuild the day rows and
re-sum the totals. Until they have, the user has pending work (reads can say so).

A user whose oldest days were pruned keeps the zone those days were counted in: their raw
heartbeats are gone, so they cannot move to another calendar, and two calendars in one history
would overlap.
"""

from __future__ import annotations

import sqlalchemy as sa

from db import users as db_users
from db.queries import Key
from jobs.errors import Refused
from jobs.recompute import lock_users

DEFAULT_ZONE = "UTC"


class ZoneRefused(Refused):
    """Not a time zone, or a user whose history cannot change calendars; the message says why."""


def time_zone(conn: sa.Connection, user_id: str) -> str:
    return db_users.select_user_zone(conn, user_id) or DEFAULT_ZONE


def set_time_zone(conn: sa.Connection, user_id: str, zone: str) -> list[Key]:
    """Count `user_id`'s days in `zone` (an IANA name, like Europe/Paris) from now on and for all
    history, in the caller's transaction. Returns the user-days to send recompute messages for
    after the commit (none when the zone does not change)."""
    zone = zone.strip() if isinstance(zone, str) else ""
    if not zone or len(zone) > 64 or not db_users.is_known_zone(conn, zone):
        raise ZoneRefused(f"{zone!r} is not a time zone: use an IANA name like Europe/Paris or UTC")
    lock_users(conn, [user_id])
    current = time_zone(conn, user_id)
    if current == zone:
        db_users.upsert_user_zone(conn, user_id, zone)
        return []
    if pruned := db_users.count_pruned_days(conn, user_id):
        raise ZoneRefused(
            f"{user_id!r} has {pruned} pruned day(s), counted in {current}: their raw "
            "heartbeats are gone, so the history cannot move to another time zone"
        )
    db_users.upsert_user_zone(conn, user_id, zone)
    return db_users.reday_user(conn, user_id, zone)


def adopt_time_zone(conn: sa.Connection, user_id: str, zone: str) -> list[Key]:
    """The zone a client reports (wakatime-cli's Timezone header), taken only by a user who has
    none yet; an explicit set_time_zone is never overridden. Returns what set_time_zone returns."""
    if db_users.select_user_zone(conn, user_id) is not None:
        return []
    return set_time_zone(conn, user_id, zone)
