"""The Redis client of every process: REDIS_URL's server, or the master Redis Sentinel names.

With REDIS_SENTINELS, redis-py asks the sentinels for the master's address whenever it opens a
connection, and a connection to a master that has since been demoted fails (its READONLY answer
becomes a ConnectionError), so workers, producers and `hbw serve` follow a failover by themselves:
what they already do when Redis is briefly down (retry, or answer 503) carries them across it.
"""

from __future__ import annotations

import redis
from redis.sentinel import Sentinel

from worker.settings import Settings


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (port 26379 when left out; ``[::1]:26379`` for IPv6)."""
    addresses = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        host, colon, port = part.rpartition(":")
        if not colon or not port.isdigit() or "]" in port:
            host, port = part, "26379"
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def redis_client(settings: Settings) -> redis.Redis:
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url)
    options = redis.connection.parse_url(settings.redis_url)
    master = {key: options[key] for key in ("username", "password", "db") if options.get(key) is not None}
    if options.get("connection_class") is redis.SSLConnection:
        master["ssl"] = True
    sentinel = Sentinel(
        sentinel_addresses(settings.redis_sentinels), socket_timeout=2, socket_connect_timeout=2
    )
    return sentinel.master_for(
        settings.redis_master_name or options["host"], socket_connect_timeout=5, **master
    )
