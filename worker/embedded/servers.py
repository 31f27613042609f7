"""Which PostgreSQL and Redis a command uses: the ones DATABASE_URL and REDIS_URL name, or the
embedded ones (docs/embedded.md).

Both unset means the embedded default. One set and the other unset is refused: a worker with
DATABASE_URL but no REDIS_URL would otherwise run on a private Redis no producer ever writes to,
silently. Embedding one server beside a configured other is asked for with the value
``embedded`` (``REDIS_URL=embedded``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from db.errors import redact
from worker.embedded.server import EmbeddedError
from worker.logs import get_logger
from worker.settings import EMBEDDED, Settings, get_settings

log = get_logger("hbw.servers")


def to_embed(settings: Settings, *, database: bool, redis: bool) -> tuple[bool, bool]:
    """(embed PostgreSQL, embed Redis) for a command that needs `database` and `redis`; raises
    EmbeddedError when a server would be embedded only because its URL was forgotten."""
    urls = {"DATABASE_URL": settings.database_url or None, "REDIS_URL": settings.redis_url or None}
    configured = [name for name, url in urls.items() if url not in (None, EMBEDDED)]
    for name, needed in (("DATABASE_URL", database), ("REDIS_URL", redis)):
        if needed and urls[name] is None and configured:
            raise EmbeddedError(
                f"{configured[0]} is set but {name} is not: set {name} too, or {name}={EMBEDDED} "
                f"to use an embedded server beside it"
            )
    return (
        database and urls["DATABASE_URL"] in (None, EMBEDDED),
        redis and urls["REDIS_URL"] in (None, EMBEDDED),
    )


@contextlib.contextmanager
def hold_servers(
    settings: Settings, *, database: bool = True, redis: bool = True, kept_by: set[int] | None = None
) -> Iterator[Settings]:
    """The configured servers, or leases on the embedded ones (to_embed decides); yields the
    settings with their URLs.

    Embedded URLs are also exported to this process's environment, the configuration of the
    processes it starts (`hbw serve`'s uvicorn workers, a benchmark's `hbw worker`s) and of its
    error messages; code in this process gets them from the yielded settings (the actors are
    handed them by setup_broker). The leases are given back when the block ends, and `kept_by`
    receives the other processes that still hold a server then (so it keeps running).
    """
    embed_database, embed_redis = to_embed(settings, database=database, redis=redis)
    if not (embed_database or embed_redis):
        yield settings
        return
    from worker.embedded import default_data_dir, embedded_servers

    data_dir = settings.data_dir or default_data_dir()
    with embedded_servers(
        data_dir,
        postgres=embed_database,
        redis_=embed_redis,
        pg_port=settings.embedded_pg_port,
        redis_port=settings.embedded_redis_port,
    ) as lease:
        log.info(
            "embedded.servers",
            data_dir=str(data_dir),
            **{k.lower(): redact(v) for k, v in lease.urls.items()},
        )
        os.environ.update(lease.urls)
        get_settings.cache_clear()
        yield get_settings()
    if kept_by is not None:
        kept_by.update(lease.kept_by)
