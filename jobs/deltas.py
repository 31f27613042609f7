"""Applying the live path's deltas: a derived job adds what stores wrote to its outbox rows
(derived_deltas) to its day rows and totals, many users at a time.

Idempotent under redelivery and concurrency: the rows a batch adds are deleted in the same
statement, so a message delivered twice finds nothing to add twice; each batch holds the job's
locks of its users (jobs.locks), taken without waiting, so two workers share the users between
them instead of queueing behind each other, and a recomputation of a user (which holds every job's
lock) is never mixed with an application of the same user's deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from db import deltas as db_deltas
from db import derived as db_derived
from db.derived_jobs import JOBS
from jobs.locks import job_lock
from jobs.user_agents import parse_user_agent

#: Delta rows looked at to choose the users of one batch (oldest first).
ROWS_PER_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class ApplyResult:
    #: Users whose deltas this batch applied (empty: nothing was waiting, or others had them).
    users: list[str]
    #: Delta rows applied.
    rows: int
    #: Whether deltas may be left that the batch did not take (too many, or users another worker
    #: had): when False, everything committed before the batch began is applied.
    more: bool = False


def apply(conn: sa.Connection, job: str, *, users: Sequence[str] | None = None) -> ApplyResult:
    """Apply a batch of `job`'s deltas, in the caller's transaction: the users of the oldest ones,
    or exactly `users` (then waiting for their locks, and taking deltas set aside too: a retry)."""
    more = False
    if users is None:
        candidates = db_deltas.select_delta_users(conn, job, limit=ROWS_PER_BATCH)
        chosen = db_deltas.try_lock_users(conn, sorted((u, job_lock(job, u)) for u in candidates))
        more = sum(candidates.values()) >= ROWS_PER_BATCH or len(chosen) < len(candidates)
    else:
        chosen = sorted(set(users))
        db_derived.lock_users(conn, sorted(job_lock(job, u) for u in chosen))
    if not chosen:
        return ApplyResult([], 0, more)
    retry = users is not None
    if JOBS[job].apply_statement:
        return ApplyResult(chosen, db_deltas.apply_deltas(conn, job, chosen, failed=retry), more)
    agents = db_deltas.apply_user_agent_day_deltas(conn, chosen, failed=retry)
    # (a batch has many users and few distinct user agents)
    parsed = {agent: parse_user_agent(agent).as_row() for agent in {row["user_agent"] for row in agents}}
    for row in agents:
        row.update(parsed[row["user_agent"]])
    db_deltas.apply_user_agent_totals(conn, agents)
    return ApplyResult(chosen, len(agents), more)


def set_aside(conn: sa.Connection, job: str, users: Sequence[str], reason: str) -> None:
    """Mark these users' deltas of `job` failed: nothing picks them up until `hbw dlq retry` (or a
    reprocess, which recomputes their days and drops them)."""
    db_deltas.mark_failed(conn, job, users, reason)


def narrow(users: Sequence[str] | None, tried: Sequence[str]) -> list[list[str]]:
    """The parts to retry a batch that failed for a reason of its own: one per user, unless it was
    one user already (then empty: that user's deltas fail by themselves)."""
    if users is not None and len(set(users)) == 1:
        return []
    return [[user_id] for user_id in sorted(set(tried))]
