"""Tables as earlier schemas made them, for the upgrade paths' tests and benchmarks."""

#: The raw heartbeats as schema 12 made them: one table, not partitioned (`hbw db migrate`).
SCHEMA_12_HEARTBEATS = """
CREATE TABLE heartbeats (
    user_id text NOT NULL, time timestamptz NOT NULL, dedup_hash bytea NOT NULL, entity text NOT NULL,
    type text NOT NULL, category text NOT NULL, project text, branch text, language text,
    is_write boolean NOT NULL DEFAULT false, lines integer, lineno integer, cursorpos integer,
    project_root_count integer, line_additions integer, line_deletions integer, dependencies text[],
    user_agent text, machine text, received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT heartbeats_identity UNIQUE (user_id, time, dedup_hash))
"""
