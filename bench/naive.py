"""The design a team writes first, for comparison: one message per heartbeat, check-then-insert,
derived rows updated row by row with increments.

Run as a plain Dramatiq app (`dramatiq bench.naive`), default middleware and JSON encoder. It is
here only to be measured: it double counts on redelivery and miscounts out-of-order heartbeats,
which is why heartbeat-worker recomputes instead. It is given the indexes it needs, so the
comparison is about the design, not a missing index.
"""

from __future__ import annotations

import datetime as dt
import os

import dramatiq
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker

from jobs.user_agents import parse_user_agent

NAMESPACE = "hbw-bench-naive"
QUEUE = "naive"
TIMEOUT = dt.timedelta(seconds=900)

SCHEMA = """
DROP TABLE IF EXISTS naive_heartbeats, naive_projects, naive_languages, naive_user_agents;
CREATE TABLE naive_heartbeats (
    id bigserial PRIMARY KEY, user_id text NOT NULL, entity text NOT NULL, type text NOT NULL,
    category text NOT NULL, time timestamptz NOT NULL, project text, branch text, language text,
    is_write boolean NOT NULL, lineno integer, user_agent text, machine text);
CREATE INDEX ON naive_heartbeats (user_id, time);
CREATE TABLE naive_projects (user_id text, name text, first_at timestamptz, last_at timestamptz,
    total_seconds float8 NOT NULL DEFAULT 0, heartbeat_count int NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, name));
CREATE TABLE naive_languages (user_id text, project text, language text,
    total_seconds float8 NOT NULL DEFAULT 0, PRIMARY KEY (user_id, project, language));
CREATE TABLE naive_user_agents (user_id text, user_agent text, editor text, os text,
    total_seconds float8 NOT NULL DEFAULT 0, PRIMARY KEY (user_id, user_agent));
"""

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), namespace=NAMESPACE)
dramatiq.set_broker(broker)
_engine: sa.Engine | None = None


def engine() -> sa.Engine:
    global _engine
    if _engine is None:
        url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
        _engine = sa.create_engine(url, pool_size=8)
    return _engine


EXISTS = sa.text("""
    SELECT 1 FROM naive_heartbeats
    WHERE user_id = :u AND time = :t AND entity = :e AND type = :ty AND category = :c
      AND project IS NOT DISTINCT FROM :p AND branch IS NOT DISTINCT FROM :b
      AND language IS NOT DISTINCT FROM :l AND is_write = :w""")
PREVIOUS = sa.text("""
    SELECT time, project, language, user_agent FROM naive_heartbeats
    WHERE user_id = :u AND time <= :t ORDER BY time DESC LIMIT 1""")
INSERT = sa.text("""
    INSERT INTO naive_heartbeats (user_id, entity, type, category, time, project, branch, language,
                                  is_write, lineno, user_agent, machine)
    VALUES (:u, :e, :ty, :c, :t, :p, :b, :l, :w, :ln, :ua, :m)""")
COUNT_PROJECT = sa.text("""
    INSERT INTO naive_projects VALUES (:u, :p, :t, :t, 0, 1)
    ON CONFLICT (user_id, name) DO UPDATE
    SET heartbeat_count = naive_projects.heartbeat_count + 1,
        first_at = least(naive_projects.first_at, :t), last_at = greatest(naive_projects.last_at, :t)""")
ADD_PROJECT = sa.text("""
    UPDATE naive_projects SET total_seconds = total_seconds + :g WHERE user_id = :u AND name = :p""")
ADD_LANGUAGE = sa.text("""
    INSERT INTO naive_languages VALUES (:u, :p, :l, :g)
    ON CONFLICT (user_id, project, language) DO UPDATE
    SET total_seconds = naive_languages.total_seconds + :g""")
ADD_AGENT = sa.text("""
    INSERT INTO naive_user_agents VALUES (:u, :a, :e, :o, :g)
    ON CONFLICT (user_id, user_agent) DO UPDATE
    SET total_seconds = naive_user_agents.total_seconds + :g""")


@dramatiq.actor(queue_name=QUEUE, actor_name="naive_store_heartbeat", max_retries=3)
def store_heartbeat(hb: dict) -> None:
    at = dt.datetime.fromtimestamp(hb["time"], dt.UTC)
    user = hb["user_id"]
    row = {
        "u": user,
        "e": hb["entity"],
        "ty": hb.get("type") or "file",
        "c": (hb.get("category") or "coding").lower(),
        "t": at,
        "p": (hb.get("project") or "").strip() or None,
        "b": hb.get("branch"),
        "l": hb.get("language") or None,
        "w": bool(hb.get("is_write")),
        "ln": hb.get("lineno"),
        "ua": hb.get("user_agent"),
        "m": hb.get("machine"),
    }
    with engine().begin() as conn:
        if conn.execute(EXISTS, row).first():  # check, then insert
            return
        previous = conn.execute(PREVIOUS, row).first()
        conn.execute(INSERT, row)
        gap = 0.0
        if previous and previous.time.date() == at.date() and at - previous.time <= TIMEOUT:
            gap = (at - previous.time).total_seconds()
        # the gap is credited to the previous heartbeat's project, language and editor, row by row
        if row["p"]:
            conn.execute(COUNT_PROJECT, row)
        if gap and previous.project:
            conn.execute(ADD_PROJECT, {"g": gap, "u": user, "p": previous.project})
            conn.execute(
                ADD_LANGUAGE, {"g": gap, "u": user, "p": previous.project, "l": previous.language or "Other"}
            )
        if gap and previous.user_agent:
            agent = parse_user_agent(previous.user_agent)
            conn.execute(
                ADD_AGENT, {"u": user, "a": previous.user_agent, "e": agent.editor, "o": agent.os, "g": gap}
            )
