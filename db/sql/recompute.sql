-- Recomputing derived rows from the raw heartbeats (reprocess, backfill, repairs): every day row
-- of a set of (user, UTC day) pairs, then the totals the changed day rows feed into. What a day
-- row and a total are is defined once, by hbw_day_rows and the hbw_*_totals functions of
-- schema.sql; these statements only write what those functions say. Rows that did not change are
-- not written, so recomputing settled data writes nothing. The caller holds the jobs' per-user
-- advisory locks and the users' store locks.

-- name: lock_users
-- Per-(job, user) advisory locks, in the order given (the caller sorts them), held to commit.
-- (:lock_keys is a JSON array.)
SELECT pg_advisory_xact_lock(k::bigint) FROM json_array_elements_text(CAST(:lock_keys AS json)) AS k

-- name: recompute_days
-- Rebuild every derived day row of these user-days from their raw heartbeats, in one pass over
-- them (hbw_day_rows). Returns the (job, user, name) whose day rows changed: a raw project for
-- the projects and languages jobs, a user agent for user_agents, a category for activity.
WITH keys AS (
    SELECT * FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
), fresh AS MATERIALIZED (
    SELECT * FROM hbw_day_rows(CAST(:user_ids AS text[]), CAST(:days AS date[]), :timeout_us,
                          CAST(:since AS timestamptz), CAST(:until AS timestamptz))
), removed_projects AS (
    DELETE FROM project_days d USING keys k
    WHERE d.user_id = k.user_id AND d.day = k.day
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.job = 'projects' AND f.user_id = d.user_id
                      AND f.day = d.day AND f.name = d.project)
    RETURNING 'projects' AS job, d.user_id, d.project AS name
), projects AS (
    INSERT INTO project_days AS d (user_id, day, project, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, coding_us, heartbeat_count, first_at, last_at
    FROM fresh WHERE job = 'projects' ORDER BY user_id, day, name
    ON CONFLICT (user_id, day, project) DO UPDATE
    SET coding_us = excluded.coding_us, heartbeat_count = excluded.heartbeat_count,
        first_at = excluded.first_at, last_at = excluded.last_at
    WHERE (d.coding_us, d.heartbeat_count, d.first_at, d.last_at)
          IS DISTINCT FROM (excluded.coding_us, excluded.heartbeat_count, excluded.first_at, excluded.last_at)
    RETURNING 'projects' AS job, d.user_id, d.project AS name
), removed_languages AS (
    DELETE FROM language_days d USING keys k
    WHERE d.user_id = k.user_id AND d.day = k.day
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.job = 'languages' AND f.user_id = d.user_id
                      AND f.day = d.day AND f.name = d.project AND f.language = d.language)
    RETURNING 'languages' AS job, d.user_id, d.project AS name
), languages AS (
    INSERT INTO language_days AS d
        (user_id, day, project, language, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
    FROM fresh WHERE job = 'languages' ORDER BY user_id, day, name, language
    ON CONFLICT (user_id, day, project, language) DO UPDATE
    SET coding_us = excluded.coding_us, heartbeat_count = excluded.heartbeat_count,
        first_at = excluded.first_at, last_at = excluded.last_at
    WHERE (d.coding_us, d.heartbeat_count, d.first_at, d.last_at)
          IS DISTINCT FROM (excluded.coding_us, excluded.heartbeat_count, excluded.first_at, excluded.last_at)
    RETURNING 'languages' AS job, d.user_id, d.project AS name
), removed_user_agents AS (
    DELETE FROM user_agent_days d USING keys k
    WHERE d.user_id = k.user_id AND d.day = k.day
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.job = 'user_agents' AND f.user_id = d.user_id
                      AND f.day = d.day AND hbw_text_key(f.name) = d.agent_key AND f.language = d.project)
    RETURNING 'user_agents' AS job, d.user_id, d.user_agent AS name
), user_agents AS (
    INSERT INTO user_agent_days AS d
        (user_id, day, user_agent, agent_key, project, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, hbw_text_key(name), language, coding_us, heartbeat_count, first_at, last_at
    FROM fresh WHERE job = 'user_agents' ORDER BY user_id, day, hbw_text_key(name), language
    ON CONFLICT (user_id, day, agent_key, project) DO UPDATE
    SET coding_us = excluded.coding_us, heartbeat_count = excluded.heartbeat_count,
        first_at = excluded.first_at, last_at = excluded.last_at
    WHERE (d.coding_us, d.heartbeat_count, d.first_at, d.last_at)
          IS DISTINCT FROM (excluded.coding_us, excluded.heartbeat_count, excluded.first_at, excluded.last_at)
    RETURNING 'user_agents' AS job, d.user_id, d.user_agent AS name
), removed_activity AS (
    DELETE FROM activity_days d USING keys k
    WHERE d.user_id = k.user_id AND d.day = k.day
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.job = 'activity' AND f.user_id = d.user_id
                      AND f.day = d.day AND f.name = d.category AND f.language = d.machine)
    RETURNING 'activity' AS job, d.user_id, d.category AS name
), activity AS (
    INSERT INTO activity_days AS d
        (user_id, day, category, machine, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
    FROM fresh WHERE job = 'activity' ORDER BY user_id, day, name, language
    ON CONFLICT (user_id, day, category, machine) DO UPDATE
    SET coding_us = excluded.coding_us, heartbeat_count = excluded.heartbeat_count,
        first_at = excluded.first_at, last_at = excluded.last_at
    WHERE (d.coding_us, d.heartbeat_count, d.first_at, d.last_at)
          IS DISTINCT FROM (excluded.coding_us, excluded.heartbeat_count, excluded.first_at, excluded.last_at)
    RETURNING 'activity' AS job, d.user_id, d.category AS name
)
SELECT * FROM removed_projects UNION SELECT * FROM projects
UNION SELECT * FROM removed_languages UNION SELECT * FROM languages
UNION SELECT * FROM removed_user_agents UNION SELECT * FROM user_agents
UNION SELECT * FROM removed_activity UNION SELECT * FROM activity

-- name: discard_deltas
-- The unapplied deltas of these user-days, all jobs: a recomputation from the raw heartbeats
-- already counts the heartbeats they came from. (The caller holds the store and job locks.)
DELETE FROM derived_deltas d
USING unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE d.user_id = k.user_id AND d.day = k.day

-- name: select_total_names
-- Every name a user's totals of one kind are (or should be) under: from the day rows and from the
-- stored totals, so a full refresh also removes totals rows nothing feeds any more.
SELECT user_id, project AS name FROM project_days
WHERE :job = 'projects' AND user_id = ANY(CAST(:user_ids AS text[]))
UNION SELECT user_id, name FROM projects
WHERE :job = 'projects' AND user_id = ANY(CAST(:user_ids AS text[]))
UNION SELECT user_id, project FROM language_days
WHERE :job = 'languages' AND user_id = ANY(CAST(:user_ids AS text[]))
UNION SELECT user_id, project FROM project_languages
WHERE :job = 'languages' AND user_id = ANY(CAST(:user_ids AS text[]))
UNION SELECT user_id, user_agent FROM user_agent_days
WHERE :job = 'user_agents' AND user_id = ANY(CAST(:user_ids AS text[]))
UNION SELECT user_id, user_agent FROM user_agents
WHERE :job = 'user_agents' AND user_id = ANY(CAST(:user_ids AS text[]))
ORDER BY 1, 2

-- name: refresh_projects
-- Re-sum `projects` for the canonical projects these raw names feed, from all their day rows.
-- A canonical project with no day rows left (it became an alias) loses its row.
WITH sources AS (
    SELECT * FROM hbw_alias_sources(CAST(:user_ids AS text[]), CAST(:raw_names AS text[]))
), totals AS (
    SELECT * FROM hbw_project_totals(CAST(:user_ids AS text[]), CAST(:raw_names AS text[]))
), removed AS (
    DELETE FROM projects p
    USING (SELECT DISTINCT user_id, project FROM sources) t
    WHERE p.user_id = t.user_id AND p.name = t.project
      AND NOT EXISTS (SELECT 1 FROM totals x WHERE x.user_id = p.user_id AND x.name = p.name)
)
INSERT INTO projects AS p
    (user_id, name, first_heartbeat_at, last_heartbeat_at, total_seconds, coding_us, heartbeat_count, color)
SELECT user_id, name, first_at, last_at, hbw_seconds(coding_us), coding_us, heartbeat_count,
       hbw_project_color(name)
FROM totals
ORDER BY user_id, name
ON CONFLICT (user_id, name) DO UPDATE
SET first_heartbeat_at = excluded.first_heartbeat_at, last_heartbeat_at = excluded.last_heartbeat_at,
    total_seconds = excluded.total_seconds, coding_us = excluded.coding_us,
    heartbeat_count = excluded.heartbeat_count, updated_at = now()
WHERE (p.first_heartbeat_at, p.last_heartbeat_at, p.coding_us, p.heartbeat_count)
      IS DISTINCT FROM (excluded.first_heartbeat_at, excluded.last_heartbeat_at,
                        excluded.coding_us, excluded.heartbeat_count)

-- name: refresh_project_languages
-- Re-sum `project_languages` for the canonical projects these raw names feed.
WITH sources AS (
    SELECT * FROM hbw_alias_sources(CAST(:user_ids AS text[]), CAST(:raw_names AS text[]))
), totals AS (
    SELECT * FROM hbw_language_totals(CAST(:user_ids AS text[]), CAST(:raw_names AS text[]))
), removed AS (
    DELETE FROM project_languages pl
    USING (SELECT DISTINCT user_id, project FROM sources) t
    WHERE pl.user_id = t.user_id AND pl.project = t.project
      AND NOT EXISTS (SELECT 1 FROM totals x
                      WHERE x.user_id = pl.user_id AND x.project = pl.project AND x.language = pl.language)
)
INSERT INTO project_languages AS pl
    (user_id, project, language, total_seconds, coding_us, heartbeat_count, first_seen_at, last_seen_at)
SELECT user_id, project, language, hbw_seconds(coding_us), coding_us, heartbeat_count, first_at, last_at
FROM totals
ORDER BY user_id, project, language
ON CONFLICT (user_id, project, language) DO UPDATE
SET total_seconds = excluded.total_seconds, coding_us = excluded.coding_us,
    heartbeat_count = excluded.heartbeat_count, first_seen_at = excluded.first_seen_at,
    last_seen_at = excluded.last_seen_at
WHERE (pl.coding_us, pl.heartbeat_count, pl.first_seen_at, pl.last_seen_at)
      IS DISTINCT FROM (excluded.coding_us, excluded.heartbeat_count,
                        excluded.first_seen_at, excluded.last_seen_at)

-- name: refresh_user_agents
-- Re-sum `user_agents` for these (user, user agent) pairs; the parsed parts come from the caller
-- (jobs.user_agents.parse_user_agent) and are rewritten too, so a parser fix lands on reprocess.
WITH parsed AS (
    SELECT * FROM unnest(
        CAST(:user_ids AS text[]), CAST(:user_agents AS text[]),
        CAST(:editor AS text[]), CAST(:editor_version AS text[]),
        CAST(:plugin AS text[]), CAST(:plugin_version AS text[]),
        CAST(:cli_version AS text[]), CAST(:os AS text[]),
        CAST(:is_browser_extension AS boolean[]),
        CAST(:version_major AS integer[]), CAST(:version_minor AS integer[]),
        CAST(:version_patch AS integer[]), CAST(:version_prerelease AS text[])
    ) AS p(user_id, user_agent, editor, editor_version, plugin, plugin_version, cli_version, os,
           is_browser_extension, version_major, version_minor, version_patch, version_prerelease)
), keyed AS (
    SELECT p.*, hbw_text_key(p.user_agent) AS agent_key FROM parsed p
), totals AS (
    SELECT * FROM hbw_user_agent_totals(CAST(:user_ids AS text[]), CAST(:user_agents AS text[]))
), removed AS (
    DELETE FROM user_agents u
    USING keyed p
    WHERE u.user_id = p.user_id AND u.agent_key = p.agent_key
      AND NOT EXISTS (SELECT 1 FROM totals t WHERE t.user_id = u.user_id AND t.user_agent = u.user_agent)
)
INSERT INTO user_agents AS u
    (user_id, user_agent, agent_key, editor, editor_version, plugin, plugin_version, cli_version, os,
     is_browser_extension, version_major, version_minor, version_patch, version_prerelease,
     first_seen_at, last_seen_at, total_seconds, coding_us, heartbeat_count)
SELECT p.user_id, p.user_agent, p.agent_key, p.editor, p.editor_version, p.plugin, p.plugin_version,
       p.cli_version, p.os, p.is_browser_extension, p.version_major, p.version_minor, p.version_patch,
       p.version_prerelease, t.first_at, t.last_at, hbw_seconds(t.coding_us), t.coding_us,
       t.heartbeat_count
FROM totals t
JOIN keyed p ON p.user_id = t.user_id AND p.user_agent = t.user_agent
ORDER BY p.user_id, p.agent_key
ON CONFLICT (user_id, agent_key) DO UPDATE
SET editor = excluded.editor, editor_version = excluded.editor_version, plugin = excluded.plugin,
    plugin_version = excluded.plugin_version, cli_version = excluded.cli_version, os = excluded.os,
    is_browser_extension = excluded.is_browser_extension, version_major = excluded.version_major,
    version_minor = excluded.version_minor, version_patch = excluded.version_patch,
    version_prerelease = excluded.version_prerelease, first_seen_at = excluded.first_seen_at,
    last_seen_at = excluded.last_seen_at, total_seconds = excluded.total_seconds,
    coding_us = excluded.coding_us, heartbeat_count = excluded.heartbeat_count
WHERE (u.editor, u.editor_version, u.plugin, u.plugin_version, u.cli_version, u.os,
       u.is_browser_extension, u.version_major, u.version_minor, u.version_patch,
       u.version_prerelease, u.first_seen_at, u.last_seen_at, u.coding_us, u.heartbeat_count)
      IS DISTINCT FROM
      (excluded.editor, excluded.editor_version, excluded.plugin, excluded.plugin_version,
       excluded.cli_version, excluded.os, excluded.is_browser_extension, excluded.version_major,
       excluded.version_minor, excluded.version_patch, excluded.version_prerelease,
       excluded.first_seen_at, excluded.last_seen_at, excluded.coding_us, excluded.heartbeat_count)
