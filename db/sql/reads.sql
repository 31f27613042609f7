-- What `hbw serve` reads for users' tools (worker.http.reads, worker.http.projects_api): the
-- derived tables only, one statement per answer.
--
-- The user's zone is looked up in a subquery kept apart by OFFSET 0: PostgreSQL inlines
-- hbw_zone_day_start, which names its zone 14 times, and pulled the lookup into each of them
-- (today's bounds: 0.5 ms of execution, 0.1 ms with the lookup kept apart).

-- name: select_projects_page
-- A page of a user's projects: archived ones only when asked, `search` a case-insensitive part of
-- the name or display name, `language` one of the project's languages; each with its aliases, and
-- the number of projects that match (`matching`, the same on every row).
WITH matching AS (
    SELECT p.*
    FROM projects p
    WHERE p.user_id = :user_id
      AND (:include_archived OR NOT p.is_archived)
      AND (CAST(:search AS text) IS NULL
           OR strpos(lower(p.name), lower(:search)) > 0
           OR strpos(lower(coalesce(p.display_name, '')), lower(:search)) > 0)
      AND (CAST(:language AS text) IS NULL
           OR EXISTS (SELECT 1 FROM project_languages l
                      WHERE l.user_id = p.user_id AND l.project = p.name AND lower(l.language) = lower(:language)))
)
SELECT m.name, m.display_name, m.color, m.description, m.is_archived, m.total_seconds, m.heartbeat_count,
       m.first_heartbeat_at, m.last_heartbeat_at, m.created_at, m.updated_at,
       ARRAY(SELECT a.alias FROM project_aliases a WHERE a.user_id = m.user_id AND a.project = m.name
             ORDER BY a.alias) AS aliases,
       count(*) OVER () AS matching
FROM matching m
ORDER BY CASE WHEN :sort = 'name' THEN m.name END,
         CASE WHEN :sort = 'last_heartbeat_at' THEN m.last_heartbeat_at END DESC,
         CASE WHEN :sort = 'first_heartbeat_at' THEN m.first_heartbeat_at END,
         m.total_seconds DESC, m.name
LIMIT :limit OFFSET :offset

-- name: select_project
-- One project by its name or by an alias of it, with its aliases.
SELECT p.name, p.display_name, p.color, p.description, p.is_archived, p.total_seconds, p.heartbeat_count,
       p.first_heartbeat_at, p.last_heartbeat_at, p.created_at, p.updated_at,
       ARRAY(SELECT a.alias FROM project_aliases a WHERE a.user_id = p.user_id AND a.project = p.name
             ORDER BY a.alias) AS aliases
FROM projects p
WHERE p.user_id = :user_id
  AND p.name = coalesce((SELECT project FROM project_aliases WHERE user_id = :user_id AND alias = :name), :name)

-- name: select_project_languages
SELECT language AS name, total_seconds, heartbeat_count, first_seen_at, last_seen_at
FROM project_languages
WHERE user_id = :user_id AND project = :project
ORDER BY total_seconds DESC, language

-- name: select_languages
-- A user's languages over every project: time, heartbeats, and in how many projects.
SELECT language AS name, sum(total_seconds) AS total_seconds, sum(heartbeat_count)::bigint AS heartbeat_count,
       count(*) AS project_count, min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
FROM project_languages
WHERE user_id = :user_id
GROUP BY language
ORDER BY sum(total_seconds) DESC, language

-- name: select_user_agents
SELECT user_agent, editor, editor_version, plugin, os, is_browser_extension, first_seen_at, last_seen_at,
       total_seconds
FROM user_agents
WHERE user_id = :user_id
ORDER BY last_seen_at DESC, user_agent

-- name: select_user_summary
-- What /users/current says of a user: since when (derived rows keep pruned history), and the last
-- heartbeat with its project and user agent (the raw store's unique key, read backwards).
SELECT least((SELECT min(first_heartbeat_at) FROM projects WHERE user_id = :user_id),
             (SELECT min(first_seen_at) FROM user_agents WHERE user_id = :user_id)) AS created_at,
       hbw_user_zone(:user_id) AS timezone,
       EXISTS (SELECT 1 FROM stale_days WHERE user_id = :user_id) AS recomputing,
       last.time AS last_heartbeat_at, last.project AS last_project, last.user_agent AS last_user_agent
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT time, project, user_agent FROM heartbeats WHERE user_id = :user_id
                   ORDER BY time DESC LIMIT 1) last ON true

-- name: select_local_today
-- The user's time zone, today on its calendar, and that day's first instant and the next day's.
SELECT zone, day, hbw_zone_day_start(zone, day) AS starts, hbw_zone_day_start(zone, day + 1) AS ends
FROM (SELECT zone, hbw_zone_day(zone, now()) AS day FROM (SELECT hbw_user_zone(:user_id) AS zone OFFSET 0) z) d

-- name: select_day_breakdown
-- A user's time in a range of their days, by day and by what it was spent on: category and machine
-- (every heartbeat: activity_days), canonical project (the alias map applied), language, and the
-- editor and operating system of the user agent (as parsed in user_agents; NULL: not parsed).
SELECT 'categories' AS kind, day, category AS name, sum(coding_us)::bigint AS coding_us
FROM activity_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY day, category
UNION ALL
SELECT 'machines', day, machine, sum(coding_us)::bigint
FROM activity_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY day, machine
UNION ALL
SELECT 'projects', d.day, c.project, sum(d.coding_us)::bigint
FROM project_days d CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.project) AS c
WHERE d.user_id = :user_id AND d.day BETWEEN :since AND :until GROUP BY d.day, c.project
UNION ALL
SELECT 'languages', day, language, sum(coding_us)::bigint
FROM language_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY day, language
UNION ALL
SELECT kind, d.day, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END, sum(d.coding_us)::bigint
FROM user_agent_days d
JOIN user_agents u ON u.user_id = d.user_id AND u.agent_key = d.agent_key
CROSS JOIN (VALUES ('editors'), ('operating_systems')) AS k(kind)
WHERE d.user_id = :user_id AND d.day BETWEEN :since AND :until
GROUP BY kind, d.day, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END

-- name: select_local_days
-- The user's time zone, and each day of a range on its calendar with its first instant and the
-- next day's.
SELECT z.zone, d::date AS day, hbw_zone_day_start(z.zone, d::date) AS starts,
       hbw_zone_day_start(z.zone, d::date + 1) AS ends
FROM (SELECT hbw_user_zone(:user_id) AS zone OFFSET 0) z
CROSS JOIN generate_series(CAST(:since AS date), CAST(:until AS date), interval '1 day') AS d
ORDER BY d

-- name: select_project_day_breakdown
-- select_day_breakdown for one (canonical) project: its time, languages, editors and operating
-- systems; categories and machines are not kept per project.
SELECT 'projects' AS kind, d.day, c.project AS name, sum(d.coding_us)::bigint AS coding_us
FROM project_days d CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.project) AS c
WHERE d.user_id = :user_id AND d.day BETWEEN :since AND :until AND c.project = :project
GROUP BY d.day, c.project
UNION ALL
SELECT 'languages', d.day, d.language, sum(d.coding_us)::bigint
FROM language_days d CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.project) AS c
WHERE d.user_id = :user_id AND d.day BETWEEN :since AND :until AND c.project = :project
GROUP BY d.day, d.language
UNION ALL
SELECT kind, d.day, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END, sum(d.coding_us)::bigint
FROM user_agent_days d
CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.project) AS c
JOIN user_agents u ON u.user_id = d.user_id AND u.agent_key = d.agent_key
CROSS JOIN (VALUES ('editors'), ('operating_systems')) AS k(kind)
WHERE d.user_id = :user_id AND d.day BETWEEN :since AND :until AND c.project = :project
GROUP BY kind, d.day, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END

-- name: select_range_breakdown
-- select_day_breakdown summed over the range (one row per kind and name), plus each day's grand
-- total as kind 'days' (name: the day), for the best day and the days without time. Each table is
-- summed per raw name before the alias map or the user agents' parts are looked up, so a year is
-- looked up per project and user agent, not per day row (a year of a busy user: 45 ms -> ~10).
SELECT 'categories' AS kind, category AS name, sum(coding_us)::bigint AS coding_us
FROM activity_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY category
UNION ALL
SELECT 'machines', machine, sum(coding_us)::bigint
FROM activity_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY machine
UNION ALL
SELECT 'days', day::text, sum(coding_us)::bigint
FROM activity_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY day
UNION ALL
SELECT 'projects', c.project, sum(d.coding_us)::bigint
FROM (SELECT project, sum(coding_us) AS coding_us FROM project_days
      WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY project) AS d
CROSS JOIN LATERAL hbw_canonical_project(:user_id, d.project) AS c
GROUP BY c.project
UNION ALL
SELECT 'languages', language, sum(coding_us)::bigint
FROM language_days WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY language
UNION ALL
SELECT kind, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END, sum(d.coding_us)::bigint
FROM (SELECT agent_key, sum(coding_us) AS coding_us FROM user_agent_days
      WHERE user_id = :user_id AND day BETWEEN :since AND :until GROUP BY agent_key) AS d
JOIN user_agents u ON u.user_id = :user_id AND u.agent_key = d.agent_key
CROSS JOIN (VALUES ('editors'), ('operating_systems')) AS k(kind)
GROUP BY kind, CASE kind WHEN 'editors' THEN u.editor ELSE u.os END

-- name: select_first_day
-- The user's first day with time (all_time's start).
SELECT min(day) FROM activity_days WHERE user_id = :user_id

-- name: select_range_bounds
-- The first instant of a range of the user's days, and the first instant after it.
SELECT hbw_zone_day_start(zone, CAST(:since AS date)) AS starts, hbw_zone_day_start(zone, CAST(:until AS date) + 1) AS ends
FROM (SELECT hbw_user_zone(:user_id) AS zone OFFSET 0) z

-- name: select_all_time
-- A user's time over all their days (every heartbeat, or one canonical project's), the number of
-- days with time, and the first of them.
WITH days AS (
    SELECT day, sum(coding_us) AS coding_us FROM activity_days
    WHERE user_id = :user_id AND CAST(:project AS text) IS NULL GROUP BY day
    UNION ALL
    SELECT d.day, sum(d.coding_us) FROM project_days d
    CROSS JOIN LATERAL hbw_canonical_project(d.user_id, d.project) AS c
    WHERE d.user_id = :user_id AND c.project = :project GROUP BY d.day
)
SELECT coalesce(sum(coding_us), 0)::bigint AS coding_us, count(*) FILTER (WHERE coding_us > 0) AS days,
       min(day) AS first_day
FROM days

-- name: select_day_heartbeats
-- A user's raw heartbeats of one of their days, in time order, each with the microseconds it is
-- credited (hbw_credit: the rule the day rows are made with).
SELECT h.time, h.entity, h.type, h.category, h.project, h.project_root_count, h.branch, h.language,
       h.dependencies, h.machine, h.line_additions, h.line_deletions, h.lines, h.lineno, h.cursorpos,
       h.is_write, h.user_agent,
       hbw_credit(h.time, lead(h.time) OVER (ORDER BY h.time, h.dedup_hash), :timeout_us) AS credited_us
FROM heartbeats h, (SELECT hbw_user_zone(:user_id) AS zone OFFSET 0) z
WHERE h.user_id = :user_id
  AND h.time >= hbw_zone_day_start(z.zone, CAST(:day AS date))
  AND h.time < hbw_zone_day_start(z.zone, CAST(:day AS date) + 1)
ORDER BY h.time, h.dedup_hash

-- name: select_machines
-- The machines a user's heartbeats named, with when they were first and last seen.
SELECT machine, min(first_at) AS first_seen_at, max(last_at) AS last_seen_at, sum(coding_us)::bigint AS coding_us
FROM activity_days WHERE user_id = :user_id AND machine <> ''
GROUP BY machine ORDER BY max(last_at) DESC, machine

-- name: select_editors
-- A user's time per editor (as parsed from their user agents; NULL: not recognised), and in how
-- many (canonical) projects it was used.
WITH editors AS (
    SELECT editor, sum(total_seconds) AS total_seconds, sum(heartbeat_count)::bigint AS heartbeat_count,
           count(*) AS user_agent_count, min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
    FROM user_agents WHERE user_id = :user_id
    GROUP BY editor
), projects AS (
    SELECT u.editor, count(DISTINCT c.project) AS project_count
    FROM (SELECT DISTINCT agent_key, project FROM user_agent_days
          WHERE user_id = :user_id AND project <> '') AS d
    JOIN user_agents u ON u.user_id = :user_id AND u.agent_key = d.agent_key
    CROSS JOIN LATERAL hbw_canonical_project(:user_id, d.project) AS c
    GROUP BY u.editor
)
SELECT e.editor AS name, e.total_seconds, e.heartbeat_count, coalesce(p.project_count, 0) AS project_count,
       e.user_agent_count, e.first_seen_at, e.last_seen_at
FROM editors e LEFT JOIN projects p ON p.editor IS NOT DISTINCT FROM e.editor
ORDER BY e.total_seconds DESC, e.editor
