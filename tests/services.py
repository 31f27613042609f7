"""Which PostgreSQL and Redis the tests use: DATABASE_URL and REDIS_URL when they are set and
reachable, otherwise the embedded servers (started for the session, stopped after it unless
something else still uses them), so `pytest` passes on a bare machine too."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from db.engine import psycopg_url, sqlalchemy_url

__all__ = ["ServerUrls", "server_urls", "sqlalchemy_url"]


@dataclass(frozen=True)
class ServerUrls:
    database: str
    redis: str
    embedded: bool = False


def _postgres_reachable(url: str | None) -> bool:
    if not url:
        return False
    try:
        with psycopg.connect(psycopg_url(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _redis_reachable(url: str | None) -> bool:
    if not url:
        return False
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def server_urls() -> Iterator[ServerUrls]:
    # ("embedded" asks for the embedded server: docs/embedded.md)
    database, redis_url = (os.environ.get(name) for name in ("DATABASE_URL", "REDIS_URL"))
    database, redis_url = (None if url == "embedded" else url for url in (database, redis_url))
    need_database, need_redis = not _postgres_reachable(database), not _redis_reachable(redis_url)
    if not (need_database or need_redis):
        yield ServerUrls(database, redis_url)
        return

    from worker.embedded import PG_PORT, REDIS_PORT, default_data_dir, embedded_servers

    data_dir = Path(os.environ.get("HBW_DATA_DIR") or default_data_dir())
    pg_port = int(os.environ.get("HBW_EMBEDDED_PG_PORT", PG_PORT))
    redis_port = int(os.environ.get("HBW_EMBEDDED_REDIS_PORT", REDIS_PORT))
    with embedded_servers(
        data_dir, postgres=need_database, redis_=need_redis, pg_port=pg_port, redis_port=redis_port
    ) as lease:
        urls = lease.urls
        yield ServerUrls(urls.get("DATABASE_URL", database), urls.get("REDIS_URL", redis_url), embedded=True)
