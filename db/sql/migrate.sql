-- `hbw db migrate`: the raw heartbeats from the unpartitioned table of a database made before
-- schema 13 into a partitioned one, while stores go on. A trigger gives the new table every row
-- stored (or pruned) from the start on, chunks copy what was there before, in key order, resuming
-- after the last key copied, and a short transaction swaps the two tables' names.

-- name: create_migration_table
CREATE TABLE IF NOT EXISTS heartbeats_partitioned (
    LIKE heartbeats INCLUDING DEFAULTS,
    CONSTRAINT heartbeats_partitioned_identity UNIQUE (user_id, time, dedup_hash)
) PARTITION BY RANGE (time)

-- name: create_migration_state
-- Where the copy is: the last key copied (none yet: NULLs) and the rows copied so far.
CREATE TABLE IF NOT EXISTS hbw_migration (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    user_id     text,
    time        timestamptz,
    dedup_hash  bytea,
    copied      bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now()
)

-- name: start_migration_state
INSERT INTO hbw_migration DEFAULT VALUES ON CONFLICT DO NOTHING

-- name: ensure_ahead_partitions
-- The new table's partitions of this month and the next two, as `hbw db init` makes them.
SELECT hbw_ensure_months_ahead('heartbeats_partitioned')

-- name: create_copy_function
-- A store's new rows go to the new table too (and their months' partitions are made first).
CREATE OR REPLACE FUNCTION hbw_migrate_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hbw_ensure_partitions(
        ARRAY(SELECT DISTINCT date_trunc('month', n.time AT TIME ZONE 'UTC')::date FROM new_rows n),
        'heartbeats_partitioned');
    INSERT INTO heartbeats_partitioned SELECT * FROM new_rows ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$

-- name: create_forget_function
-- A pruned row leaves the new table too.
CREATE OR REPLACE FUNCTION hbw_migrate_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM heartbeats_partitioned p USING old_rows o
    WHERE p.user_id = o.user_id AND p.time = o.time AND p.dedup_hash = o.dedup_hash;
    RETURN NULL;
END $$

-- name: create_copy_trigger
CREATE OR REPLACE TRIGGER hbw_migrate_copy AFTER INSERT ON heartbeats
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION hbw_migrate_copy()

-- name: create_forget_trigger
CREATE OR REPLACE TRIGGER hbw_migrate_forget AFTER DELETE ON heartbeats
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hbw_migrate_forget()

-- name: select_migration_state
SELECT user_id, time, dedup_hash, copied FROM hbw_migration

-- name: ensure_chunk_partitions
-- The partitions of the next chunk's months.
SELECT hbw_ensure_partitions(ARRAY(
    SELECT DISTINCT date_trunc('month', c.time AT TIME ZONE 'UTC')::date
    FROM (SELECT h.time FROM heartbeats h
          WHERE CAST(:user_id AS text) IS NULL
             OR (h.user_id, h.time, h.dedup_hash) > (CAST(:user_id AS text), CAST(:time AS timestamptz), CAST(:dedup_hash AS bytea))
          ORDER BY h.user_id, h.time, h.dedup_hash
          LIMIT :size) AS c), 'heartbeats_partitioned')

-- name: copy_chunk
-- The next :size rows after the last key copied, into the new table; moves the state on. Returns
-- the rows read (0: the copy is done).
WITH chunk AS (
    SELECT h.* FROM heartbeats h
    WHERE CAST(:user_id AS text) IS NULL
       OR (h.user_id, h.time, h.dedup_hash) > (CAST(:user_id AS text), CAST(:time AS timestamptz), CAST(:dedup_hash AS bytea))
    ORDER BY h.user_id, h.time, h.dedup_hash
    LIMIT :size
), copied AS (
    INSERT INTO heartbeats_partitioned SELECT * FROM chunk ON CONFLICT DO NOTHING
), last AS (
    SELECT user_id, time, dedup_hash FROM chunk ORDER BY user_id DESC, time DESC, dedup_hash DESC LIMIT 1
), moved AS (
    UPDATE hbw_migration m
    SET user_id = last.user_id, time = last.time, dedup_hash = last.dedup_hash,
        copied = m.copied + (SELECT count(*) FROM chunk)
    FROM last
)
SELECT count(*) FROM chunk

-- name: swap_tables
-- With the old table locked (stores wait a moment), the new one takes its name.
DO $$
BEGIN
    LOCK TABLE heartbeats IN ACCESS EXCLUSIVE MODE;
    DROP TRIGGER hbw_migrate_copy ON heartbeats;
    DROP TRIGGER hbw_migrate_forget ON heartbeats;
    ALTER TABLE heartbeats RENAME TO heartbeats_unpartitioned;
    ALTER TABLE heartbeats_unpartitioned RENAME CONSTRAINT heartbeats_identity TO heartbeats_unpartitioned_identity;
    ALTER TABLE heartbeats_partitioned RENAME TO heartbeats;
    ALTER TABLE heartbeats RENAME CONSTRAINT heartbeats_partitioned_identity TO heartbeats_identity;
    DROP FUNCTION hbw_migrate_copy();
    DROP FUNCTION hbw_migrate_forget();
    DROP TABLE hbw_migration;
END $$

-- name: count_missing
-- Rows of the old table the new one lacks (0 after a complete copy, unless pruned since).
SELECT count(*) FROM heartbeats_unpartitioned o
WHERE NOT EXISTS (SELECT 1 FROM heartbeats n
                  WHERE n.user_id = o.user_id AND n.time = o.time AND n.dedup_hash = o.dedup_hash)

-- name: old_table_exists
SELECT to_regclass('heartbeats_unpartitioned') IS NOT NULL

-- name: drop_old_table
DROP TABLE heartbeats_unpartitioned

-- name: estimate_rows
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'heartbeats'::regclass
