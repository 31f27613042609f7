"""The derived jobs, one record each. Everything that names them (queues and actors, the outbox,
the updaters, recompute, verify, the benchmark) reads them from here.

Each job owns day rows and totals (schema.sql) fed by the raw heartbeats, and a Dramatiq queue of
its own, so operators can scale the jobs apart. Their SQL names them too: the literal `job` of
derived_deltas and the day tables (schema.sql's hbw_feeds, db/sql/deltas.sql, recompute.sql,
verify.sql, users.sql): a new job is added there and here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DerivedJob:
    #: The `job` of derived_deltas, stale work and lock keys.
    name: str
    #: Its queue, and the actor that applies its deltas.
    queue: str
    actor: str
    #: Its day rows and its totals (None: reads sum the day rows).
    day_table: str
    total_table: str | None
    #: The statement applying its deltas, or None when the worker finishes the totals in Python
    #: (user_agents: the parsed parts of each user agent).
    apply_statement: str | None
    #: Keyed by project: an alias change re-sums it.
    by_project: bool


DERIVED_JOBS = (
    DerivedJob(
        name="projects",
        queue="projects",
        actor="update_projects",
        day_table="project_days",
        total_table="projects",
        apply_statement="apply_project_deltas",
        by_project=True,
    ),
    DerivedJob(
        name="languages",
        queue="languages",
        actor="update_languages",
        day_table="language_days",
        total_table="project_languages",
        apply_statement="apply_language_deltas",
        by_project=True,
    ),
    DerivedJob(
        name="user_agents",
        queue="user_agents",
        actor="update_user_agents",
        day_table="user_agent_days",
        total_table="user_agents",
        apply_statement=None,
        by_project=False,
    ),
    DerivedJob(
        name="activity",
        queue="activity",
        actor="update_activity",
        day_table="activity_days",
        total_table=None,
        apply_statement="apply_activity_deltas",
        by_project=False,
    ),
)
#: name -> job
JOBS = {job.name: job for job in DERIVED_JOBS}
