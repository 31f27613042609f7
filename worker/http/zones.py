"""The time zone a client reports. wakatime-cli sends the machine's IANA zone in a ``Timezone``
header with every request; a user who has no time zone yet takes the first one seen, before that
request's heartbeats are queued (so they and everything before are counted in it). A zone set
since, by `hbw user set` or ``PATCH /api/v1/users/current``, is never overridden by a header: a
laptop that travels does not move its owner's history. Each server process asks the database
once per user."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from db.queries import Key
from jobs.users import ZoneRefused, adopt_time_zone
from worker.logs import get_logger

log = get_logger("hbw.http")


class ZoneAdopter:
    def __init__(self, engine: sa.Engine, send: Callable[[Sequence[Key]], int]) -> None:
        self.engine, self.send = engine, send
        self.settled: set[str] = set()  # users who have a zone (or whose header was refused)

    async def adopt(self, user_id: str, zone: str | None) -> None:
        if zone and user_id not in self.settled:
            await run_in_threadpool(self._adopt, user_id, zone)

    def _adopt(self, user_id: str, zone: str) -> None:
        try:
            with self.engine.begin() as conn:
                keys = adopt_time_zone(conn, user_id, zone)
        except ZoneRefused as e:  # not a zone, or pruned history: the user stays as they are
            log.info("http.zone_ignored", user_id=user_id, reason=str(e))
            keys = []
        self.settled.add(user_id)
        if keys:
            log.info("http.zone_adopted", user_id=user_id, zone=zone, user_days=len(keys))
            self.send(keys)  # (if this fails, the sweeper sends them)
