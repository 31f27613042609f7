-- Keeping the outbox tables small: they are written and deleted all day long.

-- name: dead_rows
-- Rows deleted or updated but not vacuumed yet, per outbox table (PostgreSQL's statistics, which
-- every backend reports within a second or so of its transaction).
SELECT relname AS table_name, n_dead_tup AS dead_rows
FROM pg_stat_user_tables
WHERE relid IN ('derived_deltas'::regclass, 'stale_days'::regclass)

-- name: vacuum_derived_deltas
VACUUM (SKIP_LOCKED) derived_deltas

-- name: vacuum_stale_days
VACUUM (SKIP_LOCKED) stale_days
