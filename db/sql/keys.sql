-- API keys of the HTTP ingest (schema.sql: api_keys). Keys arrive here already hashed.

-- name: insert_key
INSERT INTO api_keys (key_hash, user_id, hint) VALUES (:key_hash, :user_id, :hint)

-- name: select_key_user
-- The user a key belongs to, unless it was revoked.
SELECT user_id FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL

-- name: revoke_key
UPDATE api_keys SET revoked_at = now() WHERE key_hash = :key_hash AND revoked_at IS NULL RETURNING user_id

-- name: revoke_user_keys
UPDATE api_keys SET revoked_at = now() WHERE user_id = :user_id AND revoked_at IS NULL RETURNING hint

-- name: list_keys
SELECT hint, created_at, revoked_at FROM api_keys WHERE user_id = :user_id ORDER BY created_at, hint
