-- Users' own settings (table users): the time zone their days are counted in.

-- name: select_user_zone
SELECT timezone FROM users WHERE user_id = :user_id

-- name: is_known_zone
-- An IANA name PostgreSQL knows (not an abbreviation: 'EST' would ignore daylight saving, and a
-- POSIX string like 'UTC+3' reads its sign backwards).
SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :zone AND (name LIKE '%/%' OR name = 'UTC'))

-- name: count_pruned_days
SELECT count(*) FROM user_days WHERE user_id = :user_id AND pruned_at IS NOT NULL

-- name: upsert_user_zone
INSERT INTO users (user_id, timezone) VALUES (:user_id, :zone)
ON CONFLICT (user_id) DO UPDATE SET timezone = excluded.timezone, updated_at = now()

-- name: forget_user_days
-- Every day row, outbox row and user-day of the user goes (before their history is laid out on
-- another calendar).
WITH gone_projects AS (DELETE FROM project_days WHERE user_id = :user_id),
     gone_languages AS (DELETE FROM language_days WHERE user_id = :user_id),
     gone_agents AS (DELETE FROM user_agent_days WHERE user_id = :user_id),
     gone_activity AS (DELETE FROM activity_days WHERE user_id = :user_id),
     gone_deltas AS (DELETE FROM derived_deltas WHERE user_id = :user_id),
     gone_stale AS (DELETE FROM stale_days WHERE user_id = :user_id)
DELETE FROM user_days WHERE user_id = :user_id

-- name: lay_out_user_days
-- The user-days of the user's raw heartbeats in `zone` (converted with the zone given, not looked
-- up per row), each stale, for a recomputation with the totals re-summed. Returns them.
WITH days AS (
    SELECT DISTINCT hbw_zone_day(:zone, time) AS day FROM heartbeats WHERE user_id = :user_id
), new_days AS (
    INSERT INTO user_days (user_id, day) SELECT :user_id, day FROM days ORDER BY day
)
INSERT INTO stale_days (user_id, day, full_refresh)
SELECT :user_id, day, true FROM days ORDER BY day
RETURNING user_id, day
