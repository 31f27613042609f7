-- Project aliases (SPEC section 4): (user, alias) -> project.

-- name: select_alias_target
SELECT project FROM project_aliases WHERE user_id = :user_id AND alias = :alias

-- name: select_aliases_of
SELECT alias FROM project_aliases WHERE user_id = :user_id AND project = :project ORDER BY alias

-- name: upsert_alias
-- Returns the project the alias pointed at before (NULL when it is new).
WITH previous AS (
    SELECT project FROM project_aliases WHERE user_id = :user_id AND alias = :alias
), upserted AS (
    INSERT INTO project_aliases (user_id, alias, project) VALUES (:user_id, :alias, :project)
    ON CONFLICT (user_id, alias) DO UPDATE SET project = excluded.project, created_at = now()
)
SELECT project FROM previous

-- name: delete_alias
DELETE FROM project_aliases WHERE user_id = :user_id AND alias = :alias RETURNING project

-- name: list_aliases
SELECT alias, project, created_at FROM project_aliases WHERE user_id = :user_id ORDER BY alias

-- name: update_project_metadata
-- User-owned columns only; processing never writes them (except color, once, at creation).
UPDATE projects
SET display_name = CASE WHEN :set_display_name THEN CAST(:display_name AS text) ELSE display_name END,
    color = CASE WHEN :set_color THEN CAST(:color AS text) ELSE color END,
    description = CASE WHEN :set_description THEN CAST(:description AS text) ELSE description END,
    is_archived = CASE WHEN :set_is_archived THEN CAST(:is_archived AS boolean) ELSE is_archived END,
    updated_at = now()
WHERE user_id = :user_id AND name = :name
RETURNING name, display_name, color, description, is_archived

-- name: list_projects
SELECT name, display_name, color, description, is_archived, total_seconds, heartbeat_count,
       first_heartbeat_at, last_heartbeat_at
FROM projects
WHERE user_id = :user_id
ORDER BY total_seconds DESC, name
