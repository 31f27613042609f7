"""Who a request of `hbw serve` is from: the owner of its API key, as WakaTime clients send it.

Every failure counts against the client's address (worker.http.ratelimit), so an address that keeps
guessing is refused, whatever key it tries next, before any database lookup.
"""

from __future__ import annotations

import base64
import binascii
import time

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from db.keys import select_key_user
from jobs.keys import hash_key, normalize_key
from worker.http.ratelimit import Budgets, address_bucket


class Unauthorized(Exception):
    """Answered 401 with this message."""


def key_from_request(request: Request) -> str:
    """The API key as WakaTime clients send it; raises Unauthorized when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Authorization header") from None
        # wakatime-cli encodes the bare key; `curl -u KEY:` sends "KEY:"
        user, _, password = decoded.partition(":")
        return user or password
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    if key := request.query_params.get("api_key"):
        return key
    raise Unauthorized("missing API key (HTTP Basic with the key, or ?api_key=)")


class KeyCache:
    """Key hash -> user (or None for unknown keys), kept `ttl` seconds, so a busy plugin does not
    cost a database lookup per request. A revoked key stops working within `ttl`."""

    MAX_ENTRIES = 100_000

    def __init__(self, engine: sa.Engine, ttl: float) -> None:
        self.engine, self.ttl = engine, ttl
        self._entries: dict[bytes, tuple[str | None, float]] = {}

    MISS = object()

    def cached(self, key_hash: bytes) -> str | object | None:
        """The cached answer, or MISS (no database work: safe on the event loop)."""
        entry = self._entries.get(key_hash)
        return entry[0] if entry and entry[1] > time.monotonic() else self.MISS

    def user_for(self, key_hash: bytes) -> str | None:
        now = time.monotonic()
        with self.engine.connect() as conn:
            user_id = select_key_user(conn, key_hash)
        if self.ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = (user_id, now + self.ttl)
        return user_id


class Authenticator:
    def __init__(self, keys: KeyCache, budgets: Budgets) -> None:
        self.keys, self.budgets = keys, budgets

    async def authenticate(self, request: Request) -> tuple[str, bytes, str]:
        """(user, key hash, client address); raises Unauthorized, or RateLimited (worker.http.ratelimit)
        when the address used up its failures."""
        address = address_bucket(request.client and request.client.host)
        try:
            normalized = normalize_key(key_from_request(request))
            if normalized is None:
                raise Unauthorized("invalid API key: expected a UUID v4, optionally prefixed waka_")
            key_hash = hash_key(normalized)
            user_id = self.keys.cached(key_hash)
            if user_id is KeyCache.MISS:
                user_id = await run_in_threadpool(self._lookup, key_hash, address)
            if user_id is None:
                raise Unauthorized("unknown or revoked API key")
        except Unauthorized:
            await run_in_threadpool(self.budgets.record_failure, address)
            raise
        return user_id, key_hash, address

    def _lookup(self, key_hash: bytes, address: str) -> str | None:
        self.budgets.check_address(address)  # a refused address costs no database lookup
        return self.keys.user_for(key_hash)
