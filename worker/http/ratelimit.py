"""Request budgets of `hbw serve`, counted in Redis so every server process shares them.

* Per API key: ``HBW_HTTP_RATE_LIMIT_PER_MINUTE`` requests in each clock minute (a fixed window:
  simple, and bounded at 2x in a burst that straddles a minute).
* Per client address: ``HBW_HTTP_AUTH_FAILURES_PER_MINUTE`` failed authentications in a minute that
  starts at the first failure. Past it every request from that address is answered 429 until the
  minute is over, whatever its key, so guessing keys learns nothing and costs no database lookup.
  An IPv6 client counts by its /64 network (one host usually holds the whole of it). The address
  is the TCP peer's, or X-Forwarded-For's when the peer is a configured trusted proxy
  (HBW_HTTP_TRUSTED_PROXIES, applied by uvicorn before the request reaches the app).

The requests `hbw serve` gathers into one group (worker.http.groups) share one Redis round trip
for both checks, made by the group's thread, never on the event loop; only failures cost more.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

import redis

from worker.runtime.redis_keys import Keys

AUTH_WINDOW_SECONDS = 60


class RateLimited(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, max(1, retry_after)


def address_bucket(host: str | None) -> str:
    """What a client's failures are counted under: its IPv4 address or its IPv6 /64."""
    if not host:
        return "unknown"
    if ":" not in host:  # IPv4 (or a name a proxy forwarded): as it is
        return host[:64]
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host[:64]
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network(f"{address}/64", strict=False))


class Budgets:
    def __init__(
        self, client: redis.Redis, namespace: str, *, per_key_per_minute: int, auth_failures_per_minute: int
    ) -> None:
        self.client, self.namespace, self.keys = client, namespace, Keys(namespace)
        self.per_key, self.failures = per_key_per_minute, auth_failures_per_minute

    def _failures_key(self, address: str) -> str:
        return self.keys.auth_failures(address)

    def check_many(self, requests: Sequence[tuple[bytes, str]]) -> list[RateLimited | None]:
        """Count requests of authenticated keys, (key hash, client address) each, in one round trip;
        for each, the RateLimited it is refused with over either budget, or None. Two requests of
        one key count in order, as if they had come one after the other."""
        if not (self.per_key or self.failures) or not requests:
            return [None] * len(requests)
        now = time.time()
        window = int(now // 60)
        pipe = self.client.pipeline(transaction=False)
        for key_hash, address in requests:
            if self.per_key:
                name = self.keys.rate(key_hash, window)
                pipe.incr(name)
                pipe.expire(name, 120)
            if self.failures:
                pipe.get(self._failures_key(address))
                pipe.ttl(self._failures_key(address))
        replies = pipe.execute()
        per_request = len(replies) // len(requests)
        verdicts: list[RateLimited | None] = []
        for start in range(0, len(replies), per_request):
            reply = replies[start : start + per_request]
            try:
                if self.per_key and reply[0] > self.per_key:
                    raise RateLimited(
                        f"rate limit: more than {self.per_key} requests per minute for this key",
                        int((window + 1) * 60 - now) + 1,
                    )
                if self.failures:
                    self._refuse_if_over(int(reply[-2] or 0), reply[-1])
            except RateLimited as refused:
                verdicts.append(refused)
            else:
                verdicts.append(None)
        return verdicts

    def check_address(self, address: str) -> None:
        """Raises RateLimited when `address` has used up its failures (before a key lookup)."""
        if self.failures:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self._failures_key(address))
            pipe.ttl(self._failures_key(address))
            count, ttl = pipe.execute()
            self._refuse_if_over(int(count or 0), ttl)

    def record_failure(self, address: str) -> None:
        """Count a failed authentication; raises RateLimited when it is one too many."""
        if self.failures:
            name = self._failures_key(address)
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(name)
            pipe.ttl(name)
            count, ttl = pipe.execute()
            if ttl < 0:  # the first failure starts the window (or a key lost its expiry)
                self.client.expire(name, AUTH_WINDOW_SECONDS)
                ttl = AUTH_WINDOW_SECONDS
            self._refuse_if_over(count, ttl)

    def _refuse_if_over(self, count: int, ttl: int) -> None:
        if count > self.failures:
            raise RateLimited(
                f"too many failed authentications from this address: more than {self.failures} per minute",
                ttl if ttl > 0 else AUTH_WINDOW_SECONDS,
            )
