"""Which PostgreSQL and Redis servers the tests use: DATABASE_URL and REDIS_URL when set and
reachable."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
import redis

from db.engine import psycopg_url, sqlalchemy_url

__all__ = ["ServerUrls", "server_urls", "sqlalchemy_url"]


@dataclass(frozen=True)
class ServerUrls:
    database: str
    redis: str


def _postgres_reachable(url: str) -> bool:
    try:
        with psycopg.connect(psycopg_url(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except redis.RedisError:
        return False


def server_urls() -> ServerUrls:
    database = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    problems = []
    if not database or not _postgres_reachable(database):
        problems.append(f"PostgreSQL at DATABASE_URL={database!r}")
    if not redis_url or not _redis_reachable(redis_url):
        problems.append(f"Redis at REDIS_URL={redis_url!r}")
    if problems:
        raise RuntimeError("tests need a reachable " + " and ".join(problems))
    return ServerUrls(database=database, redis=redis_url)
