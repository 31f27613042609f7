"""Recomputing derived rows from the raw heartbeats: what reprocessing, backfill and repairs do
(SPEC sections 3-5). The live path adds deltas instead (jobs.deltas); both give the same rows.

A recomputation of a set of user-days rebuilds every derived job's day rows from their raw
heartbeats in one pass, then re-sums the totals those day rows feed. It may run any number of
times, in any order, beside stores, delta appliers and other recomputations:

* it takes every job's lock of its users, then their store locks (jobs.locks): no delta is
  applied and no heartbeat stored for them meanwhile, and the deltas not applied yet for these
  days are dropped, since the raw heartbeats they came from are counted here;
* only user-days still stale are recomputed (duplicates of a message find nothing to do), and
  never a pruned one: its raw heartbeats are gone, its day rows are all that is left;
* a stale row is deleted only at the generation read after the locks were taken, so a reprocess
  that marks the day again meanwhile leaves it stale and the caller runs it again (``rerun``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from db import derived as db_derived
from db import stale as db_stale
from db.derived_jobs import JOBS
from db.queries import Key
from jobs.locks import job_lock, store_lock
from jobs.user_agents import parse_user_agent

#: Other stale days of a message's users recomputed with it (their own messages then find
#: nothing to do): a user's totals are re-summed once per batch of days, not once per day.
RIDERS_PER_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class RecomputeResult:
    #: User-days recomputed (those still stale when the locks were taken).
    recomputed: list[Key] = field(default_factory=list)
    #: User-days marked stale again while being recomputed: run them again.
    rerun: list[Key] = field(default_factory=list)
    #: Day rows that changed (0 when everything was already up to date).
    changed: int = 0


def lock_users(conn: sa.Connection, user_ids: Iterable[str]) -> None:
    """Every job's lock of these users, then their store locks (the order of jobs.locks)."""
    users = sorted(set(user_ids))
    db_derived.lock_users(conn, sorted(job_lock(job, user_id) for job in JOBS for user_id in users))
    db_derived.lock_users(conn, sorted(store_lock(user_id) for user_id in users))


def recompute(
    conn: sa.Connection, keys: Iterable[Key], *, timeout_us: int, riders: bool = True
) -> RecomputeResult:
    """Recompute the stale ones of `keys` (and, with `riders`, other stale days of their users),
    in the caller's transaction."""
    wanted = sorted(set(keys))
    lock_users(conn, (user_id for user_id, _ in wanted))
    stale = db_stale.select_stale(conn, wanted, extra=RIDERS_PER_MESSAGE if riders else 0)
    if not stale:
        return RecomputeResult()
    live = [(user_id, day) for user_id, day, _, pruned, _ in stale if not pruned]
    db_derived.discard_deltas(conn, live)
    changed = db_derived.recompute_days(conn, live, timeout_us)
    full = sorted({user_id for user_id, _, _, _, full_refresh in stale if full_refresh})
    for job in JOBS:
        names = [(user_id, name) for changed_job, user_id, name in changed if changed_job == job]
        if full:  # reprocessing: re-sum every total of these users, which repairs any drift
            names += db_derived.select_total_names(conn, job, full)
        refresh_totals(conn, job, names)
    rerun = db_stale.delete_stale(conn, stale)
    return RecomputeResult(recomputed=live, rerun=rerun, changed=len(changed))


def narrow(keys: Sequence[Key], *, alone: bool) -> list[tuple[list[Key], bool]]:
    """The parts to retry a recomputation that failed for a reason of its own (db.errors) as:
    one per user when it spans several, else one per user-day, alone (no other stale days of the
    user riding along). Empty when it is one user-day alone already: that one fails by itself."""
    users = sorted({user_id for user_id, _ in keys})
    if len(users) > 1:
        return [(sorted({key for key in keys if key[0] == user_id}), False) for user_id in users]
    if len(set(keys)) > 1 or not alone:
        return [([key], True) for key in sorted(set(keys))]
    return []


def set_aside(conn: sa.Connection, keys: Sequence[Key], reason: str) -> None:
    """Mark user-days whose recomputation fails by itself: nothing resends them until a reprocess
    or `hbw dlq retry` tries them again."""
    db_stale.mark_failed(conn, keys, reason)


def refresh_totals(conn: sa.Connection, job: str, changed: list[tuple[str, str]]) -> None:
    """Re-sum the totals fed by changed (user, raw project | user agent) pairs."""
    changed = sorted(set(changed))
    if JOBS[job].total_table is None:  # reads sum its day rows
        return
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
