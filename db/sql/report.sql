-- What a user wants to see: per user, projects with coding time, top languages, top editors.

-- name: report_projects
SELECT user_id, name, total_seconds, heartbeat_count, first_heartbeat_at, last_heartbeat_at
FROM projects
ORDER BY user_id, total_seconds DESC, name

-- name: report_languages
-- Coding time per language over all of a user's projects.
SELECT user_id, language, sum(total_seconds) AS total_seconds
FROM project_languages
GROUP BY user_id, language
ORDER BY user_id, total_seconds DESC, language

-- name: report_editors
-- Coding time per editor, from the parsed user agents.
SELECT user_id, coalesce(editor, 'unknown') AS editor, sum(total_seconds) AS total_seconds
FROM user_agents
GROUP BY user_id, coalesce(editor, 'unknown')
ORDER BY user_id, total_seconds DESC, editor

-- name: count_heartbeats
SELECT count(*) FROM heartbeats
