-- `hbw verify`: drift between the derived tables and what the raw heartbeats say. Each query
-- returns only the rows that differ (missing, extra, or with other values); "expected" comes from
-- the same hbw_*_days / hbw_*_totals functions recomputation writes with.

-- name: select_pending_days
-- Those of these user-days with derived work not done yet: deltas not applied, or stale.
SELECT DISTINCT k.user_id, k.day
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE EXISTS (SELECT 1 FROM stale_days s WHERE s.user_id = k.user_id AND s.day = k.day)
   OR EXISTS (SELECT 1 FROM derived_deltas d WHERE d.user_id = k.user_id AND d.day = k.day)

-- name: select_users_with_pending
SELECT user_id FROM stale_days WHERE user_id = ANY(CAST(:user_ids AS text[]))
UNION
SELECT user_id FROM derived_deltas WHERE user_id = ANY(CAST(:user_ids AS text[]))

-- name: verify_project_days
-- Stored project_days rows of these user-days that differ from what the raw heartbeats give.
WITH expected AS (
    SELECT user_id, day, name AS project, coding_us, heartbeat_count, first_at, last_at
    FROM hbw_day_rows(CAST(:user_ids AS text[]), CAST(:days AS date[]), :timeout_us,
                          CAST(:since AS timestamptz), CAST(:until AS timestamptz))
    WHERE job = 'projects'
), stored AS (
    SELECT d.*
    FROM project_days d
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON d.user_id = k.user_id AND d.day = k.day
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, coalesce(e.day, s.day) AS day,
       coalesce(e.project, s.project) AS name,
       s.coding_us / 1e6 AS stored_seconds, e.coding_us / 1e6 AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.day = s.day AND e.project = s.project
WHERE (e.coding_us, e.heartbeat_count, e.first_at, e.last_at)
      IS DISTINCT FROM (s.coding_us, s.heartbeat_count, s.first_at, s.last_at)
ORDER BY 1, 2, 3

-- name: verify_language_days
-- Stored language_days rows of these user-days that differ from what the raw heartbeats give.
WITH expected AS (
    SELECT user_id, day, name AS project, language, coding_us, heartbeat_count, first_at, last_at
    FROM hbw_day_rows(CAST(:user_ids AS text[]), CAST(:days AS date[]), :timeout_us,
                          CAST(:since AS timestamptz), CAST(:until AS timestamptz))
    WHERE job = 'languages'
), stored AS (
    SELECT d.*
    FROM language_days d
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON d.user_id = k.user_id AND d.day = k.day
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, coalesce(e.day, s.day) AS day,
       coalesce(e.project, s.project) || ' / ' || coalesce(e.language, s.language) AS name,
       s.coding_us / 1e6 AS stored_seconds, e.coding_us / 1e6 AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.day = s.day AND e.project = s.project AND e.language = s.language
WHERE (e.coding_us, e.heartbeat_count, e.first_at, e.last_at)
      IS DISTINCT FROM (s.coding_us, s.heartbeat_count, s.first_at, s.last_at)
ORDER BY 1, 2, 3

-- name: verify_user_agent_days
-- Stored user_agent_days rows of these user-days that differ from what the raw heartbeats give.
WITH expected AS (
    SELECT user_id, day, name AS user_agent, language AS project, coding_us, heartbeat_count, first_at, last_at
    FROM hbw_day_rows(CAST(:user_ids AS text[]), CAST(:days AS date[]), :timeout_us,
                          CAST(:since AS timestamptz), CAST(:until AS timestamptz))
    WHERE job = 'user_agents'
), stored AS (
    SELECT d.*
    FROM user_agent_days d
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON d.user_id = k.user_id AND d.day = k.day
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, coalesce(e.day, s.day) AS day,
       coalesce(e.user_agent, s.user_agent) || ' / ' || coalesce(e.project, s.project) AS name,
       s.coding_us / 1e6 AS stored_seconds, e.coding_us / 1e6 AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.day = s.day AND e.user_agent = s.user_agent
                   AND e.project = s.project
WHERE (e.coding_us, e.heartbeat_count, e.first_at, e.last_at)
      IS DISTINCT FROM (s.coding_us, s.heartbeat_count, s.first_at, s.last_at)
ORDER BY 1, 2, 3

-- name: verify_activity_days
-- Stored activity_days rows of these user-days that differ from what the raw heartbeats give.
WITH expected AS (
    SELECT user_id, day, name AS category, language AS machine, coding_us, heartbeat_count, first_at, last_at
    FROM hbw_day_rows(CAST(:user_ids AS text[]), CAST(:days AS date[]), :timeout_us,
                          CAST(:since AS timestamptz), CAST(:until AS timestamptz))
    WHERE job = 'activity'
), stored AS (
    SELECT d.*
    FROM activity_days d
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON d.user_id = k.user_id AND d.day = k.day
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, coalesce(e.day, s.day) AS day,
       coalesce(e.category, s.category) || ' on ' || coalesce(nullif(coalesce(e.machine, s.machine), ''), '?') AS name,
       s.coding_us / 1e6 AS stored_seconds, e.coding_us / 1e6 AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.day = s.day AND e.category = s.category AND e.machine = s.machine
WHERE (e.coding_us, e.heartbeat_count, e.first_at, e.last_at)
      IS DISTINCT FROM (s.coding_us, s.heartbeat_count, s.first_at, s.last_at)
ORDER BY 1, 2, 3

-- name: verify_projects
-- Stored projects rows of these users that differ from the sums of their day rows.
WITH names AS (
    SELECT DISTINCT user_id, project AS name FROM project_days WHERE user_id = ANY(CAST(:user_ids AS text[]))
    UNION
    SELECT user_id, name FROM projects WHERE user_id = ANY(CAST(:user_ids AS text[]))
), expected AS (
    SELECT * FROM hbw_project_totals((SELECT array_agg(user_id) FROM names), (SELECT array_agg(name) FROM names))
), stored AS (
    SELECT * FROM projects WHERE user_id = ANY(CAST(:user_ids AS text[]))
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, CAST(NULL AS date) AS day,
       coalesce(e.name, s.name) AS name,
       s.total_seconds AS stored_seconds, hbw_seconds(e.coding_us) AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.name = s.name
WHERE (e.first_at, e.last_at, e.heartbeat_count, e.coding_us, hbw_seconds(e.coding_us))
      IS DISTINCT FROM (s.first_heartbeat_at, s.last_heartbeat_at, s.heartbeat_count, s.coding_us, s.total_seconds)
ORDER BY 1, 3

-- name: verify_project_languages
-- Stored project_languages rows of these users that differ from the sums of their day rows.
WITH names AS (
    SELECT DISTINCT user_id, project AS name FROM language_days WHERE user_id = ANY(CAST(:user_ids AS text[]))
    UNION
    SELECT user_id, project FROM project_languages WHERE user_id = ANY(CAST(:user_ids AS text[]))
), expected AS (
    SELECT * FROM hbw_language_totals((SELECT array_agg(user_id) FROM names), (SELECT array_agg(name) FROM names))
), stored AS (
    SELECT * FROM project_languages WHERE user_id = ANY(CAST(:user_ids AS text[]))
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, CAST(NULL AS date) AS day,
       coalesce(e.project, s.project) || ' / ' || coalesce(e.language, s.language) AS name,
       s.total_seconds AS stored_seconds, hbw_seconds(e.coding_us) AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.project = s.project AND e.language = s.language
WHERE (e.first_at, e.last_at, e.heartbeat_count, e.coding_us, hbw_seconds(e.coding_us))
      IS DISTINCT FROM (s.first_seen_at, s.last_seen_at, s.heartbeat_count, s.coding_us, s.total_seconds)
ORDER BY 1, 3

-- name: verify_user_agents
-- Stored user_agents rows of these users that differ from the sums of their day rows.
WITH names AS (
    SELECT DISTINCT user_id, user_agent AS name FROM user_agent_days WHERE user_id = ANY(CAST(:user_ids AS text[]))
    UNION
    SELECT user_id, user_agent FROM user_agents WHERE user_id = ANY(CAST(:user_ids AS text[]))
), expected AS (
    SELECT * FROM hbw_user_agent_totals((SELECT array_agg(user_id) FROM names), (SELECT array_agg(name) FROM names))
), stored AS (
    SELECT * FROM user_agents WHERE user_id = ANY(CAST(:user_ids AS text[]))
)
SELECT coalesce(e.user_id, s.user_id) AS user_id, CAST(NULL AS date) AS day,
       coalesce(e.user_agent, s.user_agent) AS name,
       s.total_seconds AS stored_seconds, hbw_seconds(e.coding_us) AS expected_seconds,
       s.heartbeat_count AS stored_count, e.heartbeat_count AS expected_count
FROM expected e
FULL JOIN stored s ON e.user_id = s.user_id AND e.user_agent = s.user_agent
WHERE (e.first_at, e.last_at, e.heartbeat_count, e.coding_us, hbw_seconds(e.coding_us))
      IS DISTINCT FROM (s.first_seen_at, s.last_seen_at, s.heartbeat_count, s.coding_us, s.total_seconds)
ORDER BY 1, 3
