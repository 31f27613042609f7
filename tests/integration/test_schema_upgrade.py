"""`hbw db init` upgrades a database of an older release in place, keeping its rows."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from db.engine import create_engine
from db.schema import apply_schema, expected_version
from tests import services

#: user_agent_days and user_agents as schema 5 made them: keyed by the user agent's text.
SCHEMA_5_USER_AGENTS = """
CREATE TABLE user_agent_days (
    user_id text NOT NULL, day date NOT NULL, user_agent text NOT NULL, coding_us bigint NOT NULL,
    heartbeat_count integer NOT NULL, first_at timestamptz NOT NULL, last_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, user_agent));
CREATE INDEX user_agent_days_agent ON user_agent_days (user_id, user_agent);
CREATE TABLE user_agents (
    user_id text NOT NULL, user_agent text NOT NULL, editor text, editor_version text, plugin text,
    plugin_version text, cli_version text, os text, is_browser_extension boolean NOT NULL DEFAULT false,
    version_major integer, version_minor integer, version_patch integer, version_prerelease text,
    first_seen_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL,
    total_seconds double precision NOT NULL, heartbeat_count bigint NOT NULL,
    PRIMARY KEY (user_id, user_agent));
INSERT INTO user_agent_days VALUES ('alice', '2024-03-01', 'vim/9.0', 60000000, 3, now(), now());
INSERT INTO user_agents (user_id, user_agent, first_seen_at, last_seen_at, total_seconds, heartbeat_count)
VALUES ('alice', 'vim/9.0', now(), now(), 60, 3);
"""


def test_user_agent_rows_of_schema_5_are_rekeyed_and_kept(server_urls):
    name = f"hbw_upgrade_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_urls.database, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(services.sqlalchemy_url(server_urls.database)).set(database=name)
    engine = create_engine(url.render_as_string(hide_password=False), pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(SCHEMA_5_USER_AGENTS))
        for _ in range(2):  # and rerunning it changes nothing
            with engine.begin() as conn:
                assert apply_schema(conn) == expected_version()
        with engine.connect() as conn:
            keys = conn.execute(sa.text("""
                SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.n)
                FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, n), pg_attribute a
                WHERE c.contype = 'p' AND a.attrelid = c.conrelid AND a.attnum = k.attnum
                  AND c.conrelid::regclass::text IN ('user_agent_days', 'user_agents')
                GROUP BY 1""")).all()  # fmt: skip
            assert dict(keys) == {"user_agent_days": ["user_id", "day", "agent_key", "project"],
                                  "user_agents": ["user_id", "agent_key"]}  # fmt: skip
            rows = conn.execute(sa.text("SELECT count(*) FROM user_agent_days d JOIN user_agents u "
                                        "USING (user_id, user_agent, agent_key) "
                                        "WHERE agent_key = hbw_text_key('vim/9.0')")).scalar_one()  # fmt: skip
            assert rows == 1
            # schema 12 split the day rows by project: history's rows wait under '' for a backfill
            projects = conn.execute(sa.text("SELECT project FROM user_agent_days")).scalars().all()
            assert projects == [""]
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
