-- Pending derived work (table pending_recomputes). A row says "this job must recompute this
-- user-day"; enqueued_at says a message for it has been sent, so later stores need not send one.

-- name: select_unenqueued
-- Pending rows of these user-days that no message has been sent for yet.
SELECT p.job, p.user_id, p.day
FROM pending_recomputes p
JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
  ON p.user_id = k.user_id AND p.day = k.day
WHERE p.enqueued_at IS NULL
ORDER BY p.job, p.user_id, p.day

-- name: mark_enqueued
-- Record that messages were sent. Rows locked by a store or a job right now are skipped rather
-- than waited for: at worst one more message is sent later, which the job coalesces.
WITH target AS (
    SELECT p.job, p.user_id, p.day
    FROM pending_recomputes p
    JOIN unnest(CAST(:jobs AS text[]), CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(job, user_id, day)
      ON p.job = k.job AND p.user_id = k.user_id AND p.day = k.day
    WHERE p.enqueued_at IS NULL
    ORDER BY p.job, p.user_id, p.day
    FOR UPDATE OF p SKIP LOCKED
)
UPDATE pending_recomputes p
SET enqueued_at = now()
FROM target t
WHERE p.job = t.job AND p.user_id = t.user_id AND p.day = t.day

-- name: mark_pending
-- Ask for a recomputation of these user-days by every derived job (reprocessing). Returns the
-- rows that need a message: those a queued message does not already cover (the bumped generation
-- makes a queued or running job recompute them anyway).
INSERT INTO pending_recomputes AS p (job, user_id, day, full_refresh)
SELECT j.job, k.user_id, k.day, true
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
CROSS JOIN (VALUES ('languages'), ('projects'), ('user_agents')) AS j(job)
ORDER BY j.job, k.user_id, k.day
ON CONFLICT (job, user_id, day) DO UPDATE
SET generation = p.generation + 1, updated_at = now(), full_refresh = true, failed_at = NULL, error = NULL,
    enqueued_at = CASE WHEN p.failed_at IS NULL THEN p.enqueued_at END
RETURNING p.job, p.user_id, p.day, p.enqueued_at IS NULL AS needs_message

-- name: select_pending
-- The generation of each of these user-days that is still pending for a job, whether the day was
-- pruned (then there is nothing to recompute from), and whether reprocessing asked for a full
-- refresh of the user's totals. A job reads this after taking its locks,
-- and later deletes exactly these generations.
-- Other pending days of the same users (up to :extra) ride along: under load a busy user's totals
-- are then re-summed once for many days, and the messages of those days find nothing left to do.
WITH wanted AS (
    SELECT p.user_id, p.day, p.generation, p.full_refresh
    FROM pending_recomputes p
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
      ON p.user_id = k.user_id AND p.day = k.day
    WHERE p.job = :job
), riders AS (
    SELECT p.user_id, p.day, p.generation, p.full_refresh
    FROM pending_recomputes p
    WHERE p.job = :job AND p.user_id = ANY(CAST(:user_ids AS text[]))
    ORDER BY p.user_id, p.day
    LIMIT :extra
), chosen AS (
    SELECT * FROM wanted UNION SELECT * FROM riders
)
SELECT c.user_id, c.day, c.generation, u.pruned_at IS NOT NULL AS pruned, c.full_refresh
FROM chosen c
LEFT JOIN user_days u ON u.user_id = c.user_id AND u.day = c.day
ORDER BY c.user_id, c.day

-- name: delete_pending
-- Done with these user-days at the generations read. A store that committed meanwhile bumped the
-- generation: that row stays, and is returned as still pending so the job runs it again. Rows
-- are locked in key order, like stores lock them.
WITH done AS (
    SELECT p.user_id, p.day
    FROM pending_recomputes p
    JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[]), CAST(:generations AS bigint[]))
         AS k(user_id, day, generation)
      ON p.user_id = k.user_id AND p.day = k.day AND p.generation = k.generation
    WHERE p.job = :job
    ORDER BY p.user_id, p.day
    FOR UPDATE OF p
), deleted AS (
    DELETE FROM pending_recomputes p
    USING done d
    WHERE p.job = :job AND p.user_id = d.user_id AND p.day = d.day
    RETURNING p.user_id, p.day
)
SELECT k.user_id, k.day
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE NOT EXISTS (SELECT 1 FROM deleted d WHERE d.user_id = k.user_id AND d.day = k.day)

-- name: claim_orphans
-- Pending rows no message is known to carry: never enqueued after `min_age` (the storing worker
-- died between commit and send), or enqueued longer than `stale_after` ago (the message was
-- lost with a Redis that kept nothing). Marks them enqueued and returns them for sending.
WITH orphans AS (
    SELECT job, user_id, day
    FROM pending_recomputes
    WHERE job = ANY(CAST(:jobs AS text[])) AND failed_at IS NULL
      AND ((enqueued_at IS NULL AND updated_at <= now() - CAST(:min_age AS interval))
           OR enqueued_at <= now() - CAST(:stale_after AS interval))
    ORDER BY job, user_id, day
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE pending_recomputes p
SET enqueued_at = now()
FROM orphans o
WHERE p.job = o.job AND p.user_id = o.user_id AND p.day = o.day
RETURNING p.job, p.user_id, p.day

-- name: mark_failed
-- These user-days of a job could not be recomputed, for a reason of their own (see schema.sql).
UPDATE pending_recomputes p
SET failed_at = now(), error = :error
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
WHERE p.job = :job AND p.user_id = k.user_id AND p.day = k.day

-- name: count_pending
-- Recomputations still to do, and those that failed.
SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL)
FROM pending_recomputes
