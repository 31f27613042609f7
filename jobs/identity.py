"""Heartbeat identity (SPEC section 2): two heartbeats are duplicates when these fields agree.

The key is the first 16 bytes of sha256 over the compact, ASCII-escaped JSON array
``[user_id, entity, type, category, time_us, project, branch, language, is_write]`` of the
normalised heartbeat, with ``time_us`` the time in integer microseconds and absent values
``null``. It is spelled out in the README so other implementations can reproduce it.
"""

from __future__ import annotations

import hashlib
import json

from jobs.heartbeat import Heartbeat

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def dedup_hash(hb: Heartbeat) -> bytes:
    identity = [
        hb.user_id, hb.entity, hb.type, hb.category, hb.time_us,
        hb.project, hb.branch, hb.language, hb.is_write,
    ]  # fmt: skip
    return hashlib.sha256(_encode(identity).encode("ascii")).digest()[:16]
