-- User-days to recompute from the raw heartbeats (table stale_days): what reprocessing and
-- backfill ask for. enqueued_at says a message for the row has been sent, so the sweeper knows
-- which ones no message carries.

-- name: mark_stale
-- Ask for a recomputation of these user-days (with every total of their users re-summed).
-- Returns the rows that need a message: those a queued message does not already cover (the
-- bumped generation makes a queued or running recomputation do them again anyway).
INSERT INTO stale_days AS s (user_id, day, full_refresh)
SELECT k.user_id, k.day, true
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
ORDER BY k.user_id, k.day
ON CONFLICT (user_id, day) DO UPDATE
SET generation = s.generation + 1, updated_at = now(), full_refresh = true, failed_at = NULL, error = NULL,
    enqueued_at = CASE WHEN s.failed_at IS NULL THEN s.enqueued_at END
RETURNING s.user_id, s.day, s.enqueued_at IS NULL AS needs_message

-- name: mark_enqueued
-- Record that messages were sent. Rows locked by a recomputation right now are skipped rather
-- than waited for: at worst one more message is sent later, which finds nothing left to do.
WITH target AS (
    SELECT s.user_id, s.day
    FROM stale_days s
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON s.user_id = k.user_id AND s.day = k.day
    WHERE s.enqueued_at IS NULL
    ORDER BY s.user_id, s.day
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE stale_days s
SET enqueued_at = now()
FROM target t
WHERE s.user_id = t.user_id AND s.day = t.day

-- name: select_stale
-- The generation of each of these user-days that is still stale, whether the day was pruned
-- (then there is nothing to recompute from) and whether a full refresh of the user's totals was
-- asked for. A recomputation reads this after taking its locks, and later deletes exactly these
-- generations. Other stale days of the same users (up to :extra) ride along, so a user's totals
-- are re-summed once for many days.
WITH wanted AS (
    SELECT s.user_id, s.day, s.generation, s.full_refresh
    FROM stale_days s
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON s.user_id = k.user_id AND s.day = k.day
), riders AS (
    SELECT s.user_id, s.day, s.generation, s.full_refresh
    FROM stale_days s
    WHERE s.user_id = ANY(CAST(:user_ids AS text[])) AND s.failed_at IS NULL
    ORDER BY s.user_id, s.day
    LIMIT :extra
), chosen AS (
    SELECT * FROM wanted UNION SELECT * FROM riders
)
SELECT c.user_id, c.day, c.generation, u.pruned_at IS NOT NULL AS pruned, c.full_refresh
FROM chosen c
LEFT JOIN user_days u ON u.user_id = c.user_id AND u.day = c.day
ORDER BY c.user_id, c.day

-- name: delete_stale
-- Done with these user-days at the generations read. A reprocess that marked one again meanwhile
-- bumped its generation: that row stays, and is returned so the recomputation runs it again.
WITH done AS (
    SELECT s.user_id, s.day
    FROM stale_days s
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[]), CAST(:generations AS bigint[]))
         AS k(user_id, day, generation)
      ON s.user_id = k.user_id AND s.day = k.day AND s.generation = k.generation
    ORDER BY s.user_id, s.day
    FOR UPDATE OF s
), deleted AS (
    DELETE FROM stale_days s USING done d
    WHERE s.user_id = d.user_id AND s.day = d.day
    RETURNING s.user_id, s.day
)
SELECT k.user_id, k.day
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE NOT EXISTS (SELECT 1 FROM deleted d WHERE d.user_id = k.user_id AND d.day = k.day)

-- name: mark_stale_failed
-- These user-days could not be recomputed, for a reason of their own (see schema.sql).
UPDATE stale_days s
SET failed_at = now(), error = :error
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE s.user_id = k.user_id AND s.day = k.day

-- name: claim_orphans
-- Stale rows no message is known to carry: never enqueued after `min_age` (the sender died
-- between commit and send), or enqueued longer than `stale_after` ago (the message was lost with a
-- Redis that kept nothing). Marks them enqueued and returns them for sending.
WITH orphans AS (
    SELECT user_id, day
    FROM stale_days
    WHERE failed_at IS NULL
      AND ((enqueued_at IS NULL AND updated_at <= now() - CAST(:min_age AS interval))
           OR enqueued_at <= now() - CAST(:stale_after AS interval))
    ORDER BY user_id, day
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE stale_days s
SET enqueued_at = now()
FROM orphans o
WHERE s.user_id = o.user_id AND s.day = o.day
RETURNING s.user_id, s.day

-- name: count_pending
-- Derived work not done yet, and work that failed: stale user-days and unapplied deltas.
SELECT (SELECT count(*) FROM stale_days WHERE failed_at IS NULL)
       + (SELECT count(*) FROM derived_deltas WHERE failed_at IS NULL),
       (SELECT count(*) FROM stale_days WHERE failed_at IS NOT NULL)
       + (SELECT count(DISTINCT (job, user_id)) FROM derived_deltas WHERE failed_at IS NOT NULL)
