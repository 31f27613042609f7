-- The monthly partitions of the raw heartbeats (schema.sql, hbw_ensure_partitions).

-- name: ensure_partitions
-- A partition for each month of :months that has none; returns how many were made.
SELECT hbw_ensure_partitions(CAST(:months AS date[]), CAST(:parent AS text))

-- name: ensure_months_ahead
SELECT hbw_ensure_months_ahead()

-- name: is_partitioned
SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:parent))

-- name: select_partitions
-- Each partition of :parent with its range (lower bound inclusive, upper exclusive), oldest first.
SELECT c.relname AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lower,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass(:parent)
ORDER BY lower

-- name: heartbeat_bytes
-- The bytes the raw heartbeats take on disk (heap, TOAST and index, all partitions) and their rows.
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes,
       (SELECT count(*) FROM heartbeats) AS rows
FROM pg_class c
WHERE c.oid = 'heartbeats'::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'heartbeats'::regclass)
