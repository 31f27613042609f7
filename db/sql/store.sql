-- Storing raw heartbeats. A batch is COPYed into a per-connection staging table, then moved into
-- the raw store by the statements below, in this order, inside one transaction. Every statement
-- writes rows in key order, and a transaction only waits on locks of its current phase, so
-- concurrent batches can block each other briefly but never deadlock.

-- name: create_incoming
-- Staging table for COPY, one per connection; its rows disappear at every commit.
CREATE TEMP TABLE IF NOT EXISTS incoming_heartbeats (LIKE heartbeats INCLUDING DEFAULTS)
ON COMMIT DELETE ROWS

-- name: insert_incoming
-- Raw rows in (duplicates ignored), and every user-day that gained a row is marked pending for
-- the three derived jobs, in the same statement. Returns those user-days with their new rows.
WITH inserted AS (
    INSERT INTO heartbeats
    SELECT * FROM incoming_heartbeats
    ORDER BY dedup_hash
    ON CONFLICT (dedup_hash) DO NOTHING
    RETURNING user_id, time
), days AS (
    SELECT user_id, (time AT TIME ZONE 'UTC')::date AS day, count(*)::int AS inserted
    FROM inserted
    GROUP BY 1, 2
), pending AS (
    INSERT INTO pending_recomputes AS p (job, user_id, day)
    SELECT j.job, d.user_id, d.day
    FROM days d CROSS JOIN (VALUES ('languages'), ('projects'), ('user_agents')) AS j(job)
    ORDER BY j.job, d.user_id, d.day
    ON CONFLICT (job, user_id, day) DO UPDATE
    SET generation = p.generation + 1, updated_at = now()
)
SELECT user_id, day, inserted FROM days ORDER BY user_id, day

-- name: insert_user_days
-- Remember which user-days have raw data (what reprocessing iterates over).
INSERT INTO user_days (user_id, day)
SELECT user_id, day
FROM unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
ORDER BY user_id, day
ON CONFLICT DO NOTHING
