"""The advisory locks that order work on a user's rows, in one place.

* A **store lock** per user: a store holds it while it inserts heartbeats and computes their
  deltas from the stored neighbours; a recomputation and a prune hold it while they read or
  delete the user's raw heartbeats.
* A **job lock** per (derived job, user): whoever writes that job's day rows or totals of the user
  holds it (applying deltas, recomputing, changing aliases, pruning).

Whoever takes both takes job locks first, then store locks, each set sorted: no deadlock.
"""

from __future__ import annotations

import hashlib


def lock_key(kind: str, user_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for (kind, user)."""
    digest = hashlib.blake2b(f"{kind}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def store_lock(user_id: str) -> int:
    return lock_key("store", user_id)


def job_lock(job: str, user_id: str) -> int:
    return lock_key(job, user_id)
