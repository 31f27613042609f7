-- Reprocess and backfill runs (table reprocess_runs), and the user-days they walk through.

-- name: try_lock_run
-- Held by a transaction the run keeps open while it works, and released when that transaction
-- ends (a crashed run's connection ends it). Not a session-level lock: behind a pooler in
-- transaction mode a session's statements reach different server connections, while an open
-- transaction keeps its own.
SELECT pg_try_advisory_xact_lock(:lock_key)

-- name: select_run
SELECT * FROM reprocess_runs WHERE run_key = :run_key

-- name: start_run
-- A fresh run (cursor reset) or the resumption of an interrupted one (cursor kept).
INSERT INTO reprocess_runs AS r (run_key, kind, since, until, user_id, status, host, pid)
VALUES (:run_key, :kind, :since, :until, :user_id, 'running', :host, :pid)
ON CONFLICT (run_key) DO UPDATE
SET status = 'running', host = excluded.host, pid = excluded.pid, error = NULL, finished_at = NULL,
    started_at = CASE WHEN :fresh THEN now() ELSE r.started_at END,
    since = CASE WHEN :fresh THEN excluded.since ELSE r.since END,
    until = CASE WHEN :fresh THEN excluded.until ELSE r.until END,
    cursor_day = CASE WHEN :fresh THEN NULL ELSE r.cursor_day END,
    cursor_user = CASE WHEN :fresh THEN NULL ELSE r.cursor_user END,
    user_days = CASE WHEN :fresh THEN 0 ELSE r.user_days END
RETURNING *

-- name: advance_run
UPDATE reprocess_runs
SET cursor_day = :cursor_day, cursor_user = :cursor_user, user_days = user_days + :count
WHERE run_key = :run_key

-- name: finish_run
UPDATE reprocess_runs
SET status = :status, error = :error, finished_at = CASE WHEN :status = 'running' THEN NULL ELSE now() END
WHERE run_key = :run_key

-- name: select_user_days_after
-- The next user-days of a run, in (day, user) order after its cursor; pruned days are skipped
-- (their raw heartbeats are gone, their derived rows are all that is left).
SELECT user_id, day
FROM user_days
WHERE day BETWEEN :since AND :until
  AND pruned_at IS NULL
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))
  AND (CAST(:cursor_day AS date) IS NULL
       OR (day, user_id) > (CAST(:cursor_day AS date), CAST(:cursor_user AS text)))
ORDER BY day, user_id
LIMIT :limit

-- name: count_user_days
SELECT count(*)
FROM user_days
WHERE day BETWEEN :since AND :until
  AND pruned_at IS NULL
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))

-- name: select_day_range
-- First and last day with raw heartbeats (a backfill's default range).
SELECT min(day), max(day) FROM user_days WHERE pruned_at IS NULL

-- name: count_stale_between
-- Recomputations still to do in [since, until], optionally for one user, and those that failed.
SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL)
FROM stale_days
WHERE day BETWEEN :since AND :until
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))

-- name: select_last_run
-- The latest run of a kind (`hbw status` shows the last daily reprocess).
SELECT * FROM reprocess_runs WHERE kind = :kind ORDER BY started_at DESC LIMIT 1

-- name: select_last_finished
-- When the last run of each kind finished, by status (done, enqueued), in UNIX seconds.
SELECT kind, status, extract(epoch FROM max(finished_at))::float8 AS at
FROM reprocess_runs WHERE status IN ('done', 'enqueued') AND finished_at IS NOT NULL
GROUP BY kind, status ORDER BY kind, status
