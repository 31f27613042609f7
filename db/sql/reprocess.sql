-- Reprocessing: which user-days have raw heartbeats, and how many are still pending.

-- name: select_user_days
-- User-days with raw heartbeats in [since, until] (UTC days, inclusive), optionally one user's.
SELECT user_id, day
FROM user_days
WHERE day BETWEEN :since AND :until
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))
ORDER BY day, user_id

-- name: count_pending_between
-- Recomputations still pending in [since, until], optionally for one user.
SELECT count(*)
FROM pending_recomputes
WHERE day BETWEEN :since AND :until
  AND (CAST(:user_id AS text) IS NULL OR user_id = CAST(:user_id AS text))
