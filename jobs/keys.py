"""API keys in WakaTime's format: a UUID v4, optionally prefixed ``waka_``.

WakaTime clients check that format before they send a key, so keys we issue must have it. A key is
normalised (prefix dropped, lower case) before hashing, so ``waka_<uuid>`` and ``<uuid>`` are the
same key, as they are for WakaTime.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import sqlalchemy as sa

from db import keys as db_keys
from jobs.errors import Refused

_KEY = re.compile(r"^(?:waka_)?([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})$", re.I)


class ApiKeyError(Refused):
    """A key that is malformed or unknown (the message says which)."""


def normalize_key(text: str) -> str | None:
    """The canonical form of a key (a lower-case UUID v4), or None when it is not one."""
    match = _KEY.match(text.strip())
    return match.group(1).lower() if match else None


def hash_key(normalized: str) -> bytes:
    return hashlib.sha256(normalized.encode()).digest()


def new_key() -> str:
    return f"waka_{uuid.uuid4()}"


def create_key(conn: sa.Connection, user_id: str) -> str:
    """Issue a key for `user_id`; the key itself is returned once and never stored."""
    if not 1 <= len(user_id) <= 255 or "\x00" in user_id:
        raise ApiKeyError("user_id must be 1..255 characters without NUL")
    key = new_key()
    normalized = normalize_key(key)
    assert normalized is not None
    db_keys.insert_key(conn, hash_key(normalized), user_id, normalized[-4:])
    return key


def revoke_key(conn: sa.Connection, key: str) -> str:
    """Revoke one key; returns its user. Raises ApiKeyError when it is malformed or not live."""
    normalized = normalize_key(key)
    if normalized is None:
        raise ApiKeyError("not an API key (expected a UUID v4, optionally prefixed waka_)")
    user_id = db_keys.revoke_key(conn, hash_key(normalized))
    if user_id is None:
        raise ApiKeyError("no live key matches (unknown or already revoked)")
    return user_id
