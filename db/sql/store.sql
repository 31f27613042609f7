-- Storing raw heartbeats: a validated batch arrives as one JSON array and goes in with one
-- statement (parsing, identity hashing and the time conversion happen in PostgreSQL's C code).
-- Rows are written in key order and pending rows in (job, user, day) order, and the second
-- statement only reads and adds user_days, so concurrent batches can block each other briefly but
-- never deadlock.

-- name: insert_heartbeats
-- Raw rows in (duplicates, within the batch or with stored rows, ignored), and every user-day
-- that gained rows is marked pending for the three derived jobs. Returns every user-day of the
-- batch with the number of rows it gained (0: all duplicates).
WITH incoming AS (
    SELECT r.*, round(r.time * 1000000)::bigint AS time_us
    FROM json_to_recordset(CAST(:batch AS json)) AS r(
        user_id text, entity text, type text, category text, time numeric, project text, branch text,
        language text, is_write boolean, lines integer, lineno integer, cursorpos integer,
        project_root_count integer, line_additions integer, line_deletions integer, dependencies text[],
        user_agent text, machine text)
), identified AS (
    SELECT hbw_identity(user_id, entity, type, category, time_us, project, branch, language, is_write) AS dedup_hash,
           timestamptz 'epoch' + time_us * interval '1 microsecond' AS at, *
    FROM incoming
), inserted AS (
    INSERT INTO heartbeats (user_id, time, dedup_hash, entity, type, category, project, branch, language,
                            is_write, lines, lineno, cursorpos, project_root_count, line_additions,
                            line_deletions, dependencies, user_agent, machine)
    SELECT DISTINCT ON (user_id, at, dedup_hash)
           user_id, at, dedup_hash, entity, type, category, project, branch, language, is_write, lines,
           lineno, cursorpos, project_root_count, line_additions, line_deletions, dependencies,
           user_agent, machine
    FROM identified
    ORDER BY user_id, at, dedup_hash
    ON CONFLICT DO NOTHING
    RETURNING user_id, (time AT TIME ZONE 'UTC')::date AS day
), gained AS (
    SELECT user_id, day, count(*)::int AS inserted FROM inserted GROUP BY user_id, day
), pending AS (
    INSERT INTO pending_recomputes AS p (job, user_id, day)
    SELECT j.job, g.user_id, g.day
    FROM gained g CROSS JOIN (VALUES ('languages'), ('projects'), ('user_agents')) AS j(job)
    ORDER BY j.job, g.user_id, g.day
    ON CONFLICT (job, user_id, day) DO UPDATE
    SET generation = p.generation + 1, updated_at = now(), failed_at = NULL, error = NULL,
        -- a failed day is tried again with the new heartbeats: send it a message now
        enqueued_at = CASE WHEN p.failed_at IS NULL THEN p.enqueued_at END
)
SELECT b.user_id, b.day, coalesce(g.inserted, 0) AS inserted
FROM (SELECT DISTINCT user_id, (at AT TIME ZONE 'UTC')::date AS day FROM identified) AS b
LEFT JOIN gained g ON g.user_id = b.user_id AND g.day = b.day
ORDER BY b.user_id, b.day

-- name: record_days
-- After insert_heartbeats, in the same transaction: remember the user-days that gained rows
-- (what reprocessing iterates over), and return the pending rows of the batch's user-days that no
-- message has been sent for yet (the caller sends them after commit).
WITH new_days AS (
    INSERT INTO user_days (user_id, day)
    SELECT user_id, day
    FROM unnest(CAST(:new_user_ids AS text[]), CAST(:new_days AS date[])) AS k(user_id, day)
    ORDER BY user_id, day
    ON CONFLICT DO NOTHING
)
SELECT p.job, p.user_id, p.day
FROM pending_recomputes p
JOIN unnest(CAST(:user_ids AS text[]), CAST(:days AS date[])) AS k(user_id, day)
  ON p.user_id = k.user_id AND p.day = k.day
WHERE p.enqueued_at IS NULL
ORDER BY p.job, p.user_id, p.day
