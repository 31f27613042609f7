"""SPEC section 2: which heartbeats are duplicates, and the documented hash format."""

from __future__ import annotations

import hashlib
import json
import time

from jobs.heartbeat import validate_heartbeat
from jobs.identity import dedup_hash

NOW = time.time()
BASE = {
    "user_id": "alice",
    "entity": "a.py",
    "time": 1_700_000_000.123456,
    "project": "web",
    "branch": "main",
    "language": "Python",
    "is_write": True,
    "category": "coding",
    "type": "file",
}


def key(**changes) -> bytes:
    return dedup_hash(validate_heartbeat({**BASE, **changes}, now=NOW))


def test_documented_format():
    identity = ["alice", "a.py", "file", "coding", 1700000000123456, "web", "main", "Python", True]
    text = json.dumps(identity, separators=(",", ":"), ensure_ascii=True)
    assert key() == hashlib.sha256(text.encode()).digest()[:16]


def test_identity_fields_make_a_difference():
    for changes in (
        {"user_id": "bob"},
        {"entity": "b.py"},
        {"type": "app"},
        {"category": "debugging"},
        {"time": 1_700_000_000.123457},
        {"project": "api"},
        {"project": None},
        {"branch": "dev"},
        {"language": "Go"},
        {"is_write": False},
    ):
        assert key(**changes) != key(), changes


def test_other_fields_do_not():
    assert key(lineno=5, lines=100, user_agent="x", machine="m", dependencies="a,b", cursorpos=3) == key()


def test_normalisation_happens_before_identity():
    assert key(project="  web ", category="CODING") == key()
    assert key(is_write=True, type=None, category=None) == key(type="file", category="coding")


def test_microsecond_precision_not_second():
    assert key(time=1_700_000_000.000001) != key(time=1_700_000_000.000002)
    assert key(time=1_700_000_000) == key(time=1_700_000_000.0)
