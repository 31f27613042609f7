-- Applying the outbox (derived_deltas): a derived job deletes a set of users' rows and adds them
-- to its day rows and totals in the same statement, so what it deletes it has added, once. The
-- caller holds the job's advisory locks of those users (which a recomputation and an alias change
-- take too), so nothing else writes their rows meanwhile; additions commute, so the order in which
-- batches of deltas are applied does not matter. A delta that only changes a credit has no
-- first_at / last_at; its row exists already (the heartbeat it credits was added before), and
-- PostgreSQL checks NOT NULL before ON CONFLICT, so such deltas carry +/-infinity, which least()
-- and greatest() never keep.

-- Lists of users (:user_ids) and rows (:users, :rows) are JSON arrays (db.queries.json_param). The
-- deltas of a list of users are claimed with a join, which hashes one side (`user_id = ANY(array)`
-- compared each row with the whole list: 15 ms per 1,000 users, 4 ms joined).

-- name: select_delta_users
-- Users with deltas of a job waiting, with how many of the oldest :limit rows are theirs.
SELECT user_id, count(*) AS rows
FROM (SELECT user_id FROM derived_deltas
      WHERE job = :job AND failed_at IS NULL
      ORDER BY id LIMIT :limit) AS oldest
GROUP BY user_id

-- name: try_lock_users
-- Of these (user, lock key) pairs, the users whose lock this transaction got without waiting: a
-- user another worker is busy with is left to it.
SELECT u.user_id
FROM json_to_recordset(CAST(:users AS json)) AS u(user_id text, lock_key bigint)
WHERE pg_try_advisory_xact_lock(u.lock_key)

-- name: apply_project_deltas
-- projects: day rows per raw project, totals per canonical project (the alias map applied).
WITH claimed AS (
    DELETE FROM derived_deltas d USING json_array_elements_text(CAST(:user_ids AS json)) AS u(user_id)
    WHERE d.job = 'projects' AND d.user_id = u.user_id AND (d.failed_at IS NULL OR :failed)
    RETURNING d.user_id, day, name, coding_us, heartbeat_count, first_at, last_at
), days AS (
    SELECT user_id, day, name, sum(coding_us)::bigint AS coding_us, sum(heartbeat_count)::int AS heartbeat_count,
           coalesce(min(first_at), 'infinity') AS first_at, coalesce(max(last_at), '-infinity') AS last_at
    FROM claimed GROUP BY user_id, day, name
), day_rows AS (
    INSERT INTO project_days AS d (user_id, day, project, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, coding_us, heartbeat_count, first_at, last_at
    FROM days ORDER BY user_id, day, name
    ON CONFLICT (user_id, day, project) DO UPDATE
    SET coding_us = d.coding_us + excluded.coding_us, heartbeat_count = d.heartbeat_count + excluded.heartbeat_count,
        first_at = least(d.first_at, excluded.first_at), last_at = greatest(d.last_at, excluded.last_at)
), totals AS (
    SELECT d.user_id, c.project AS name, sum(d.coding_us)::bigint AS coding_us,
           sum(d.heartbeat_count)::bigint AS heartbeat_count, min(d.first_at) AS first_at, max(d.last_at) AS last_at
    FROM days d CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.name) AS c
    GROUP BY 1, 2
), total_rows AS (
    INSERT INTO projects AS p
        (user_id, name, first_heartbeat_at, last_heartbeat_at, total_seconds, coding_us, heartbeat_count, color)
    SELECT user_id, name, first_at, last_at, hbw_seconds(coding_us), coding_us, heartbeat_count,
           hbw_project_color(name)
    FROM totals ORDER BY user_id, name
    ON CONFLICT (user_id, name) DO UPDATE
    SET coding_us = p.coding_us + excluded.coding_us, total_seconds = hbw_seconds(p.coding_us + excluded.coding_us),
        heartbeat_count = p.heartbeat_count + excluded.heartbeat_count,
        first_heartbeat_at = least(p.first_heartbeat_at, excluded.first_heartbeat_at),
        last_heartbeat_at = greatest(p.last_heartbeat_at, excluded.last_heartbeat_at), updated_at = now()
)
SELECT count(*) FROM claimed

-- name: apply_activity_deltas
-- activity: day rows per (category, machine); no totals (reads sum the day rows).
WITH claimed AS (
    DELETE FROM derived_deltas d USING json_array_elements_text(CAST(:user_ids AS json)) AS u(user_id)
    WHERE d.job = 'activity' AND d.user_id = u.user_id AND (d.failed_at IS NULL OR :failed)
    RETURNING d.user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
), days AS (
    SELECT user_id, day, name, language, sum(coding_us)::bigint AS coding_us,
           sum(heartbeat_count)::int AS heartbeat_count, coalesce(min(first_at), 'infinity') AS first_at,
           coalesce(max(last_at), '-infinity') AS last_at
    FROM claimed GROUP BY user_id, day, name, language
), day_rows AS (
    INSERT INTO activity_days AS d (user_id, day, category, machine, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
    FROM days ORDER BY user_id, day, name, language
    ON CONFLICT (user_id, day, category, machine) DO UPDATE
    SET coding_us = d.coding_us + excluded.coding_us, heartbeat_count = d.heartbeat_count + excluded.heartbeat_count,
        first_at = least(d.first_at, excluded.first_at), last_at = greatest(d.last_at, excluded.last_at)
)
SELECT count(*) FROM claimed

-- name: apply_language_deltas
-- languages: day rows per (raw project, language), totals per (canonical project, language).
WITH claimed AS (
    DELETE FROM derived_deltas d USING json_array_elements_text(CAST(:user_ids AS json)) AS u(user_id)
    WHERE d.job = 'languages' AND d.user_id = u.user_id AND (d.failed_at IS NULL OR :failed)
    RETURNING d.user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
), days AS (
    SELECT user_id, day, name, language, sum(coding_us)::bigint AS coding_us,
           sum(heartbeat_count)::int AS heartbeat_count, coalesce(min(first_at), 'infinity') AS first_at,
           coalesce(max(last_at), '-infinity') AS last_at
    FROM claimed GROUP BY user_id, day, name, language
), day_rows AS (
    INSERT INTO language_days AS d
        (user_id, day, project, language, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at
    FROM days ORDER BY user_id, day, name, language
    ON CONFLICT (user_id, day, project, language) DO UPDATE
    SET coding_us = d.coding_us + excluded.coding_us, heartbeat_count = d.heartbeat_count + excluded.heartbeat_count,
        first_at = least(d.first_at, excluded.first_at), last_at = greatest(d.last_at, excluded.last_at)
), totals AS (
    SELECT d.user_id, c.project, d.language, sum(d.coding_us)::bigint AS coding_us,
           sum(d.heartbeat_count)::bigint AS heartbeat_count, min(d.first_at) AS first_at, max(d.last_at) AS last_at
    FROM days d CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.name) AS c
    GROUP BY 1, 2, 3
), total_rows AS (
    INSERT INTO project_languages AS pl
        (user_id, project, language, total_seconds, coding_us, heartbeat_count, first_seen_at, last_seen_at)
    SELECT user_id, project, language, hbw_seconds(coding_us), coding_us, heartbeat_count, first_at, last_at
    FROM totals ORDER BY user_id, project, language
    ON CONFLICT (user_id, project, language) DO UPDATE
    SET coding_us = pl.coding_us + excluded.coding_us,
        total_seconds = hbw_seconds(pl.coding_us + excluded.coding_us),
        heartbeat_count = pl.heartbeat_count + excluded.heartbeat_count,
        first_seen_at = least(pl.first_seen_at, excluded.first_seen_at),
        last_seen_at = greatest(pl.last_seen_at, excluded.last_seen_at)
)
SELECT count(*) FROM claimed

-- name: apply_user_agent_day_deltas
-- user_agents, first half: the day rows (per user agent and raw project). Returns the totals' deltas per (user, user agent), which
-- the caller adds with the parsed parts (apply_user_agent_totals).
WITH claimed AS (
    DELETE FROM derived_deltas d USING json_array_elements_text(CAST(:user_ids AS json)) AS u(user_id)
    WHERE d.job = 'user_agents' AND d.user_id = u.user_id AND (d.failed_at IS NULL OR :failed)
    RETURNING d.user_id, day, name, language AS project, coding_us, heartbeat_count, first_at, last_at
), days AS (
    SELECT user_id, day, name, hbw_text_key(name) AS agent_key, project, sum(coding_us)::bigint AS coding_us,
           sum(heartbeat_count)::int AS heartbeat_count, coalesce(min(first_at), 'infinity') AS first_at,
           coalesce(max(last_at), '-infinity') AS last_at
    FROM claimed GROUP BY user_id, day, name, project
), day_rows AS (
    INSERT INTO user_agent_days AS d
        (user_id, day, user_agent, agent_key, project, coding_us, heartbeat_count, first_at, last_at)
    SELECT user_id, day, name, agent_key, project, coding_us, heartbeat_count, first_at, last_at
    FROM days ORDER BY user_id, day, agent_key, project
    ON CONFLICT (user_id, day, agent_key, project) DO UPDATE
    SET coding_us = d.coding_us + excluded.coding_us, heartbeat_count = d.heartbeat_count + excluded.heartbeat_count,
        first_at = least(d.first_at, excluded.first_at), last_at = greatest(d.last_at, excluded.last_at)
)
SELECT user_id, name AS user_agent, sum(coding_us)::bigint AS coding_us,
       sum(heartbeat_count)::bigint AS heartbeat_count,
       nullif(min(first_at), 'infinity') AS first_at, nullif(max(last_at), '-infinity') AS last_at
FROM days GROUP BY user_id, name ORDER BY user_id, name

-- name: apply_user_agent_totals
-- user_agents, second half: the totals, with the parsed parts for rows it creates.
WITH totals AS (
    SELECT *, hbw_text_key(user_agent) AS agent_key
    FROM json_to_recordset(CAST(:rows AS json)) AS t(
        user_id text, user_agent text, coding_us bigint, heartbeat_count bigint, first_at timestamptz,
        last_at timestamptz, editor text, editor_version text, plugin text, plugin_version text,
        cli_version text, os text, is_browser_extension boolean, version_major integer,
        version_minor integer, version_patch integer, version_prerelease text)
)
INSERT INTO user_agents AS u
    (user_id, user_agent, agent_key, editor, editor_version, plugin, plugin_version, cli_version, os,
     is_browser_extension, version_major, version_minor, version_patch, version_prerelease,
     first_seen_at, last_seen_at, total_seconds, coding_us, heartbeat_count)
SELECT user_id, user_agent, agent_key, editor, editor_version, plugin, plugin_version, cli_version, os,
       is_browser_extension, version_major, version_minor, version_patch, version_prerelease,
       coalesce(first_at, 'infinity'), coalesce(last_at, '-infinity'), hbw_seconds(coding_us), coding_us,
       heartbeat_count
FROM totals ORDER BY user_id, agent_key
ON CONFLICT (user_id, agent_key) DO UPDATE
SET coding_us = u.coding_us + excluded.coding_us, total_seconds = hbw_seconds(u.coding_us + excluded.coding_us),
    heartbeat_count = u.heartbeat_count + excluded.heartbeat_count,
    first_seen_at = least(u.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(u.last_seen_at, excluded.last_seen_at)

-- name: mark_deltas_failed
-- These users' deltas of a job cannot be applied, for a reason of their own (see schema.sql).
UPDATE derived_deltas SET failed_at = now(), error = :error
WHERE job = :job AND user_id = ANY(CAST(:user_ids AS text[]))

-- name: select_delta_backlog
-- Per job: deltas waiting (not failed), how old the oldest is, and those that failed.
SELECT job, count(*) FILTER (WHERE failed_at IS NULL) AS waiting,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL)) AS oldest_seconds,
       count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed
FROM derived_deltas GROUP BY job
