"""Recomputing a derived job's rows for a set of user-days (SPEC sections 3-5).

Every derived row is a function of the raw heartbeats, so a recomputation is idempotent and
may run any number of times, in any order, beside stores and other recomputations:

* per-(job, user) advisory locks, taken in sorted order, serialise work on one user's totals;
* only user-days still pending are recomputed (duplicates of a message coalesce to nothing), and
  never a pruned one: its raw heartbeats are gone, its day rows are all that is left;
* a pending row is deleted only at the generation read after the locks were taken, so heartbeats
  stored meanwhile leave it pending and the caller runs it again (``rerun``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from db import derived as db_derived
from db import pending as db_pending
from db.queries import Key
from jobs.user_agents import parse_user_agent

JOBS = db_derived.JOBS
#: Other pending days of a message's users recomputed with it (their own messages then find
#: nothing to do): a busy user's totals are re-summed once per batch of days, not once per day.
RIDERS_PER_MESSAGE = 500


def lock_key(job: str, user_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for (job, user)."""
    digest = hashlib.blake2b(f"{job}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class RecomputeResult:
    job: str
    #: User-days recomputed (those still pending when the job got its locks).
    recomputed: list[Key] = field(default_factory=list)
    #: User-days that gained heartbeats while being recomputed: run them again.
    rerun: list[Key] = field(default_factory=list)
    #: Day rows that changed (0 when everything was already up to date).
    changed: int = 0


def recompute(
    conn: sa.Connection, job: str, keys: Iterable[Key], *, timeout_us: int, riders: bool = True
) -> RecomputeResult:
    """Recompute `job`'s day rows and totals for the pending ones of `keys` (and, with `riders`,
    other pending days of their users), in the caller's transaction."""
    if job not in JOBS:
        raise ValueError(f"unknown derived job {job!r}")
    wanted = sorted(set(keys))
    db_derived.lock_users(conn, sorted({lock_key(job, user_id) for user_id, _ in wanted}))
    pending = db_pending.select_pending(conn, job, wanted, extra=RIDERS_PER_MESSAGE if riders else 0)
    if not pending:
        return RecomputeResult(job)

    live = [(user_id, day) for user_id, day, _, pruned, _ in pending if not pruned]
    changed = db_derived.recompute_days(conn, job, live, timeout_us)
    full = sorted({user_id for user_id, _, _, _, full_refresh in pending if full_refresh})
    if full:  # reprocessing: re-sum every total of these users, which repairs any drift
        changed = changed + db_derived.select_total_names(conn, job, full)
    refresh_totals(conn, job, changed)
    rerun = db_pending.delete_pending(conn, job, pending)
    return RecomputeResult(job, recomputed=live, rerun=rerun, changed=len(changed))


def narrow(keys: Sequence[Key], *, alone: bool) -> list[tuple[list[Key], bool]]:
    """The parts to retry a recomputation that failed for a reason of its own (db.errors) as:
    one per user when it spans several, else one per user-day, alone (no other pending days of the
    user riding along). Empty when it is one user-day alone already: that one fails by itself."""
    users = sorted({user_id for user_id, _ in keys})
    if len(users) > 1:
        return [(sorted({key for key in keys if key[0] == user_id}), False) for user_id in users]
    if len(set(keys)) > 1 or not alone:
        return [([key], True) for key in sorted(set(keys))]
    return []


def set_aside(conn: sa.Connection, job: str, keys: Sequence[Key], reason: str) -> None:
    """Mark user-days whose recomputation fails by itself: nothing resends them until new
    heartbeats, a reprocess or `hbw dlq retry` try them again."""
    db_pending.mark_failed(conn, job, keys, reason)


def refresh_totals(conn: sa.Connection, job: str, changed: list[tuple[str, str]]) -> None:
    """Re-sum the totals fed by changed (user, raw project | user agent) pairs."""
    changed = sorted(set(changed))
    if job == "projects":
        db_derived.refresh_projects(conn, changed)
    elif job == "languages":
        db_derived.refresh_project_languages(conn, changed)
    else:
        rows = [
            {"user_id": user_id, "user_agent": agent, **parse_user_agent(agent).as_row()}
            for user_id, agent in changed
        ]
        db_derived.refresh_user_agents(conn, rows)
