-- Storing raw heartbeats: a validated batch arrives as one JSON array and goes in with one
-- statement (parsing, identity hashing and the time conversion happen in PostgreSQL's C code),
-- which also writes what the new heartbeats change in the derived tables (derived_deltas, the
-- outbox) and records new user-days. The caller holds the store locks of the batch's users, taken
-- in a statement of its own before this one, so the neighbours this statement reads are final.
-- Rows are written in key order, so concurrent batches of other users never deadlock.

-- name: lock_store_users
-- The batch's users' store locks, in the order given (:lock_keys, a JSON array, sorted by the
-- caller). And, for this transaction, generic plans: a custom plan of insert_heartbeats is planned
-- against every monthly partition of the heartbeats (1.8 ms with four years of them, against 0.5 ms
-- to run), while the generic one opens only the months around the batch's times at each run; by
-- cost alone PostgreSQL would keep choosing the custom one.
WITH generic AS MATERIALIZED (SELECT set_config('plan_cache_mode', 'force_generic_plan', true))
SELECT pg_advisory_xact_lock(k::bigint)
FROM generic, json_array_elements_text(CAST(:lock_keys AS json)) WITH ORDINALITY AS l(k, n)
ORDER BY l.n

-- name: insert_heartbeats
-- Raw rows in (duplicates, within the batch or with stored rows, ignored). For each user-day that
-- gained rows (a day: the user's local day, docs/spec.md section 3), deltas (incrementally): only the neighbourhood of a new heartbeat
-- changes, that is the credit of the stored heartbeat right before it (its gap now ends at the new
-- one) and the new heartbeat's own credit up to the next one. Of the stored heartbeats, only those
-- around and among the new ones are read (below, `parts`), whatever the length of the day. A
-- pruned day keeps its derived rows as they are.
-- Returns every user-day of the batch with the number of rows it gained (0: all duplicates).
WITH incoming AS (
    SELECT r.*, round(r.time * 1000000)::bigint AS time_us
    FROM json_to_recordset(CAST(:batch AS json)) AS r(
        user_id text, entity text, type text, category text, time numeric, project text, branch text,
        language text, is_write boolean, lines integer, lineno integer, cursorpos integer,
        project_root_count integer, line_additions integer, line_deletions integer, dependencies text[],
        user_agent text, machine text)
), zones AS (
    -- Each user's time zone, looked up once per batch (a lookup per heartbeat would cost 3.7 us).
    SELECT user_id, hbw_user_zone(user_id) AS zone FROM (SELECT DISTINCT user_id FROM incoming) AS u
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
    RETURNING user_id, time, dedup_hash, project, language, user_agent, category, machine
), placed AS (
    SELECT i.*, z.zone, hbw_zone_day(z.zone, i.time) AS day FROM inserted i JOIN zones z USING (user_id)
), gained AS (
    SELECT user_id, day, count(*)::int AS inserted FROM placed GROUP BY user_id, day
), new_days AS (
    INSERT INTO user_days (user_id, day)
    SELECT user_id, day FROM gained ORDER BY user_id, day
    ON CONFLICT DO NOTHING
), live AS (
    SELECT i.* FROM placed i
    WHERE NOT EXISTS (SELECT 1 FROM user_days u
                      WHERE u.user_id = i.user_id AND u.day = i.day AND u.pruned_at IS NOT NULL)
), parts AS (
    -- A user-day's new heartbeats in parts, cut where two are more than the timeout (and an hour)
    -- apart: no credit reaches across such a cut, so each part needs only the stored heartbeats
    -- around and among its own new ones (a late heartbeat beside a current one reads two
    -- neighbourhoods, not the day between them). A stored heartbeat read for two parts changes in
    -- one of them at most: in the other, the next heartbeat is more than the timeout away both
    -- now and before. (The hour keeps a backlog's sessions of a day in one part: one range scan
    -- over the few stored among them costs less than three probes per session.)
    SELECT *, count(*) FILTER (WHERE cut) OVER (PARTITION BY user_id, day ORDER BY time, dedup_hash) AS part
    FROM (SELECT *, time - lag(time) OVER (PARTITION BY user_id, day ORDER BY time, dedup_hash)
                    > greatest(:timeout_us * interval '1 microsecond', interval '1 hour') AS cut
          FROM live) AS cuts
), spans AS (
    SELECT user_id, zone, day, part, min(time) AS lo, max(time) AS hi FROM parts GROUP BY user_id, zone, day, part
), stored AS (
    -- For each part, the stored heartbeats around and among its new ones: the last before it,
    -- every one inside it (one range scan: in a backlog, new heartbeats of a user-day come
    -- together, and those stored among them are few; live, a part is one heartbeat) and the first
    -- after it. (This statement's own inserts are not visible here: the new ones are only in
    -- `live`.) :since and :until, two days either side of the batch's times, hold every day it
    -- touches: they tell PostgreSQL which monthly partitions to open before it runs, not at each
    -- probe (with two years of months, opening all of them cost more than the probes). Each comes with its credit before this batch: the stored ones are consecutive, so
    -- the next of each is the next stored one.
    SELECT *, hbw_credit(time, lead(time) OVER w, :timeout_us) AS credit_before
    FROM (
        SELECT s.user_id, s.day, s.part, e.*
        FROM spans s
        CROSS JOIN LATERAL (
            (SELECT h.time, h.dedup_hash, h.project, h.language, h.user_agent, h.category, h.machine
             FROM heartbeats h
             WHERE h.user_id = s.user_id AND h.time >= hbw_zone_day_start(s.zone, s.day) AND h.time < s.lo
               AND h.time >= to_timestamp(CAST(:since AS float8)) AND h.time < to_timestamp(CAST(:until AS float8))
             ORDER BY h.time DESC, h.dedup_hash DESC LIMIT 1)
            UNION ALL
            SELECT h.time, h.dedup_hash, h.project, h.language, h.user_agent, h.category, h.machine
            FROM heartbeats h
            WHERE h.user_id = s.user_id AND h.time >= s.lo AND h.time <= s.hi
              AND h.time >= to_timestamp(CAST(:since AS float8)) AND h.time < to_timestamp(CAST(:until AS float8))
            UNION ALL
            (SELECT h.time, h.dedup_hash, h.project, h.language, h.user_agent, h.category, h.machine
             FROM heartbeats h
             WHERE h.user_id = s.user_id AND h.time > s.hi AND h.time < hbw_zone_day_start(s.zone, s.day + 1)
               AND h.time >= to_timestamp(CAST(:since AS float8)) AND h.time < to_timestamp(CAST(:until AS float8))
             ORDER BY h.time, h.dedup_hash LIMIT 1)
        ) AS e
    ) AS around
    WINDOW w AS (PARTITION BY user_id, day, part ORDER BY time, dedup_hash)
), neighbourhood AS (
    SELECT user_id, day, part, time, dedup_hash, project, language, user_agent, category, machine,
           true AS is_new, 0::bigint AS credit_before
    FROM parts
    UNION ALL
    SELECT user_id, day, part, time, dedup_hash, project, language, user_agent, category, machine, false,
           credit_before
    FROM stored
), changes AS (
    -- In day order, each heartbeat's credit now: up to the next one of its part's neighbourhood,
    -- which holds every heartbeat from the last stored one before the part to the first stored one
    -- after it, so it is exact for all but that last one, whose credit does not change: it is last
    -- both now and before, so both read 0 and it is left out.
    SELECT user_id, day, project, language, user_agent, category, machine,
           credit_now - credit_before AS coding_us, is_new::int AS heartbeat_count,
           CASE WHEN is_new THEN time END AS at
    FROM (SELECT *, hbw_credit(time, lead(time) OVER w, :timeout_us) AS credit_now
          FROM neighbourhood
          WINDOW w AS (PARTITION BY user_id, day, part ORDER BY time, dedup_hash)) AS credited
    WHERE is_new OR credit_now <> credit_before
), deltas AS (
    INSERT INTO derived_deltas (job, user_id, day, name, language, coding_us, heartbeat_count, first_at, last_at)
    SELECT f.job, c.user_id, c.day, f.name, f.language, sum(c.coding_us)::bigint,
           sum(c.heartbeat_count)::int, min(c.at), max(c.at)
    FROM changes c
    CROSS JOIN LATERAL hbw_feeds(c.project, c.language, c.user_agent, c.category, c.machine) AS f
    GROUP BY f.job, c.user_id, c.day, f.name, f.language
    HAVING sum(c.coding_us) <> 0 OR sum(c.heartbeat_count) > 0
)
SELECT b.user_id, b.day, coalesce(g.inserted, 0) AS inserted
FROM (SELECT DISTINCT i.user_id, hbw_zone_day(z.zone, i.at) AS day FROM identified i JOIN zones z USING (user_id)) AS b
LEFT JOIN gained g ON g.user_id = b.user_id AND g.day = b.day
ORDER BY b.user_id, b.day
