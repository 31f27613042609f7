-- Raw heartbeat retention (`hbw prune`): raw rows of old days go, their derived day rows stay.

-- name: select_days_to_prune
SELECT user_id, day
FROM user_days
WHERE day < :before AND pruned_at IS NULL
ORDER BY day, user_id
LIMIT :limit

-- name: count_days_to_prune
SELECT count(*) FROM user_days WHERE day < :before AND pruned_at IS NULL

-- name: prune_user_days
-- Mark these user-days pruned and delete their raw heartbeats from :kept_from on (those before are
-- in partitions `hbw prune` drops whole), in one transaction. Returns the user-days marked and the
-- heartbeats deleted.
WITH marked AS (
    UPDATE user_days u
    SET pruned_at = now()
    FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
    WHERE u.user_id = k.user_id AND u.day = k.day AND u.pruned_at IS NULL
    RETURNING u.user_id, u.day
), deleted AS (
    DELETE FROM heartbeats h
    USING marked m
    WHERE h.user_id = m.user_id
      AND h.time >= greatest(hbw_day_start(m.user_id, m.day), CAST(:kept_from AS timestamptz))
      AND h.time < hbw_day_start(m.user_id, m.day + 1)
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS days, (SELECT count(*) FROM deleted) AS heartbeats
