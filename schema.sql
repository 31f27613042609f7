-- heartbeat-worker schema: the only place tables are defined.
-- `hbw db init` applies this file; every statement is idempotent, so rerunning it is safe.
-- Bump the version below with every change; workers refuse to start on an older database.
-- schema-version: 13

-- ---------------------------------------------------------------------------------------------
-- Keys
-- ---------------------------------------------------------------------------------------------

-- The key of a text too long for a btree entry: the first 16 bytes of sha256 over its UTF-8.
-- STABLE like convert_to, so PostgreSQL inlines it (see hbw_identity).
CREATE OR REPLACE FUNCTION hbw_text_key(value text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT substring(sha256(convert_to(value, 'UTF8')) FROM 1 FOR 16)
$$;

-- ---------------------------------------------------------------------------------------------
-- Raw store
-- ---------------------------------------------------------------------------------------------

-- One row per distinct heartbeat. dedup_hash is hbw_identity() of the identity fields of SPEC
-- section 2 (time at microsecond precision). The unique key is (user_id, time, dedup_hash): the
-- hash determines user_id and time, so this is exactly uniqueness of the hash, and the one index
-- also serves the per-user-day range scans, already in the order durations need (time, hash).
-- One index instead of two, written in key order instead of at random: inserts are about 1.6x
-- cheaper. Partitioned by UTC month (the key holds `time`, so the key is unique across months):
-- `hbw prune` drops old months whole instead of deleting their rows, and a month's index stays
-- small. Months are made by hbw_ensure_partitions: ahead by `hbw db init` and the workers, and on
-- demand by a store whose batch reaches a month that has none. A database made before schema 13
-- keeps its unpartitioned table, which works the same, until `hbw db migrate`.
CREATE TABLE IF NOT EXISTS heartbeats (
    user_id             text        NOT NULL,
    time                timestamptz NOT NULL,
    dedup_hash          bytea       NOT NULL,
    entity              text        NOT NULL,
    type                text        NOT NULL,
    category            text        NOT NULL,
    project             text,
    branch              text,
    language            text,
    is_write            boolean     NOT NULL DEFAULT false,
    lines               integer,
    lineno              integer,
    cursorpos           integer,
    project_root_count  integer,
    line_additions      integer,
    line_deletions      integer,
    dependencies        text[],
    user_agent          text,
    machine             text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT heartbeats_identity UNIQUE (user_id, time, dedup_hash)
) PARTITION BY RANGE (time);

-- The partition of `parent` for each UTC month of `months` that has none (named heartbeats_yYYYYmMM
-- whatever the parent: `hbw db migrate` builds its table under another name, then swaps). Made as a
-- table of its own, then attached: ATTACH locks the parent in SHARE UPDATE EXCLUSIVE mode, which
-- concurrent stores (ROW EXCLUSIVE) do not wait for. Nothing to do when `parent` is not partitioned.
-- Returns the partitions made.
-- (`parent` is text: a regclass default would make the function depend on the table.)
DROP FUNCTION IF EXISTS hbw_ensure_partitions(date[], regclass);
CREATE OR REPLACE FUNCTION hbw_ensure_partitions(months date[], parent text DEFAULT 'heartbeats')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date;
    name text;
    made integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(parent)) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(4842575, to_regclass(parent)::oid::integer);  -- one maker at a time
    FOR month IN SELECT DISTINCT date_trunc('month', m)::date FROM unnest(months) AS m ORDER BY 1 LOOP
        name := 'heartbeats' || to_char(month, '"_y"YYYY"m"MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', name, parent);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, name,
                       month::timestamp AT TIME ZONE 'UTC', (month + 1 * interval '1 month') AT TIME ZONE 'UTC');
        made := made + 1;
    END LOOP;
    RETURN made;
END $$;
-- (Upgrades from schema 1-2 are at the end of this file: they need hbw_identity.)

-- Every (user, UTC day) that has raw heartbeats: what reprocessing and backfill iterate over,
-- without scanning the heartbeats table.
CREATE TABLE IF NOT EXISTS user_days (
    user_id     text        NOT NULL,
    day         date        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day)
);
-- Runs walk user-days in (day, user) order.
DROP INDEX IF EXISTS user_days_day;
CREATE INDEX IF NOT EXISTS user_days_day_user ON user_days (day, user_id);
-- Set by `hbw prune`: the raw heartbeats of this day are gone, its derived day rows are kept and
-- are never recomputed again.
ALTER TABLE user_days ADD COLUMN IF NOT EXISTS pruned_at timestamptz;
-- The pruned ones, which every store checks its new heartbeats against: a tiny index, so that check
-- costs the same whatever the number of user-days (a probe per heartbeat: 4 us with 1M of them).
CREATE INDEX IF NOT EXISTS user_days_pruned ON user_days (user_id, day) WHERE pruned_at IS NOT NULL;

-- Derived work, live path: a transactional outbox. The store computes, in the transaction that
-- inserts heartbeats, what they change in each derived job's day rows (the credit of the last
-- heartbeat before each new one, and the new ones' own: SPEC section 3) and writes it here as
-- integer deltas. Each derived job deletes its rows and adds them to its day rows and totals in
-- one transaction, so a redelivered message finds nothing to add twice.
CREATE TABLE IF NOT EXISTS derived_deltas (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job              text        NOT NULL CHECK (job IN ('projects', 'languages', 'user_agents', 'activity')),
    user_id          text        NOT NULL,
    day              date        NOT NULL,
    name             text        NOT NULL,  -- the raw project (projects, languages), the user agent, the category
    language         text,                  -- languages: the language ('Other' when absent); activity: the machine
    coding_us        bigint      NOT NULL,
    heartbeat_count  integer     NOT NULL,
    first_at         timestamptz,           -- NULL when only a credit changed
    last_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- set when applying them failed for a reason of their own (not an outage): the message that
    -- carried the user was dead-lettered with the reason; `hbw dlq retry` tries them again
    failed_at        timestamptz,
    error            text
);
-- (Schema 11 added the activity job.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'derived_deltas_job_check'
                   AND pg_get_constraintdef(oid) LIKE '%activity%') THEN
        ALTER TABLE derived_deltas DROP CONSTRAINT IF EXISTS derived_deltas_job_check;
        ALTER TABLE derived_deltas ADD CONSTRAINT derived_deltas_job_check
            CHECK (job IN ('projects', 'languages', 'user_agents', 'activity'));
    END IF;
END $$;
-- The waiting ones in order: a partial index, so that picking the oldest is an ordered index scan
-- that stops at its LIMIT (and marks the index entries of rows already deleted as dead, which
-- later scans skip), never a bitmap scan over every entry not yet vacuumed (schema 8).
DROP INDEX IF EXISTS derived_deltas_order;
CREATE INDEX IF NOT EXISTS derived_deltas_waiting ON derived_deltas (job, id) WHERE failed_at IS NULL;
CREATE INDEX IF NOT EXISTS derived_deltas_user ON derived_deltas (job, user_id);
-- An outbox: every row is deleted soon after it is written, so the table holds a few live rows and
-- many dead ones. The default thresholds (20% of the live rows) would vacuum it at random; vacuum
-- it after every few thousand deletions instead, without cost-based pauses (it is small).
ALTER TABLE derived_deltas SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

-- User-days whose derived rows must be recomputed from the raw heartbeats (reprocess, backfill,
-- and the work an older release left pending). A recomputation deletes a row only at the
-- generation it read, so a reprocess that marks the day again meanwhile runs it again.
CREATE TABLE IF NOT EXISTS stale_days (
    user_id       text        NOT NULL,
    day           date        NOT NULL,
    generation    bigint      NOT NULL DEFAULT 1,
    -- besides the day, re-sum every total of the user from the day rows (repairs drift)
    full_refresh  boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    enqueued_at   timestamptz,
    -- set when recomputing the day failed for a reason of its own: see derived_deltas.failed_at
    failed_at     timestamptz,
    error         text,
    PRIMARY KEY (user_id, day)
);

-- From schema 6: pending_recomputes (a row per job and user-day) held all derived work; what it
-- still holds is recomputed from the raw heartbeats.
DO $$
BEGIN
    IF to_regclass('pending_recomputes') IS NOT NULL THEN
        INSERT INTO stale_days (user_id, day, full_refresh)
        SELECT user_id, day, bool_or(full_refresh) FROM pending_recomputes GROUP BY user_id, day
        ON CONFLICT (user_id, day) DO UPDATE SET full_refresh = stale_days.full_refresh OR excluded.full_refresh;
        DROP TABLE pending_recomputes;
    END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- User-owned data
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS project_aliases (
    user_id     text        NOT NULL,
    alias       text        NOT NULL,
    project     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, alias),
    CHECK (alias <> project)
);
CREATE INDEX IF NOT EXISTS project_aliases_project ON project_aliases (user_id, project);

-- ---------------------------------------------------------------------------------------------
-- Derived tables. Day rows are keyed by the raw project name (before aliases): totals apply the
-- alias map when they sum, so an alias change never needs the raw heartbeats. Seconds are
-- integer microseconds in day rows, so sums are exact and independent of order.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS project_days (
    user_id          text        NOT NULL,
    day              date        NOT NULL,
    project          text        NOT NULL,
    coding_us        bigint      NOT NULL,
    heartbeat_count  integer     NOT NULL,
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, project)
);
CREATE INDEX IF NOT EXISTS project_days_project ON project_days (user_id, project);

CREATE TABLE IF NOT EXISTS language_days (
    user_id          text        NOT NULL,
    day              date        NOT NULL,
    project          text        NOT NULL,
    language         text        NOT NULL,
    coding_us        bigint      NOT NULL,
    heartbeat_count  integer     NOT NULL,
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, project, language)
);
CREATE INDEX IF NOT EXISTS language_days_project ON language_days (user_id, project);

-- A user agent may be 1024 characters, 4 kB of UTF-8: more than a btree entry holds (~2.7 kB),
-- so user-agent rows are keyed by agent_key = hbw_text_key(user_agent), not by the text itself.
-- Every other key (user_id, project, language: at most 255 / 255 / 64 characters) fits as text.
-- Per raw project too ('' for heartbeats without one), so an editor's projects can be counted.
CREATE TABLE IF NOT EXISTS user_agent_days (
    user_id          text        NOT NULL,
    day              date        NOT NULL,
    user_agent       text        NOT NULL,
    agent_key        bytea       NOT NULL,
    project          text        NOT NULL,
    coding_us        bigint      NOT NULL,
    heartbeat_count  integer     NOT NULL,
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, agent_key, project)
);
-- (Upgrades from schema 5, keyed by the text, follow the user_agents table.)

-- Everything a user did in a day, by category and machine ('' when the heartbeat named none):
-- every heartbeat counts here, with or without a project, so its sums are the day's grand total,
-- its categories and its machines (docs/spec.md section 4). No totals table: reads sum day rows.
CREATE TABLE IF NOT EXISTS activity_days (
    user_id          text        NOT NULL,
    day              date        NOT NULL,
    category         text        NOT NULL,
    machine          text        NOT NULL,
    coding_us        bigint      NOT NULL,
    heartbeat_count  integer     NOT NULL,
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, category, machine)
);

CREATE TABLE IF NOT EXISTS projects (
    user_id             text             NOT NULL,
    name                text             NOT NULL,
    first_heartbeat_at  timestamptz      NOT NULL,
    last_heartbeat_at   timestamptz      NOT NULL,
    total_seconds       double precision NOT NULL,  -- coding_us / 1e6
    coding_us           bigint           NOT NULL,  -- exact, what deltas add to
    heartbeat_count     bigint           NOT NULL,
    -- user-owned metadata: processing sets color once, on insert, and never touches the rest
    display_name        text,
    color               text             NOT NULL,
    description         text,
    is_archived         boolean          NOT NULL DEFAULT false,
    created_at          timestamptz      NOT NULL DEFAULT now(),
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, name)
);

CREATE TABLE IF NOT EXISTS project_languages (
    user_id          text             NOT NULL,
    project          text             NOT NULL,
    language         text             NOT NULL,
    total_seconds    double precision NOT NULL,
    coding_us        bigint           NOT NULL,
    heartbeat_count  bigint           NOT NULL,
    first_seen_at    timestamptz      NOT NULL,
    last_seen_at     timestamptz      NOT NULL,
    PRIMARY KEY (user_id, project, language)
);

CREATE TABLE IF NOT EXISTS user_agents (
    user_id               text             NOT NULL,
    user_agent            text             NOT NULL,
    agent_key             bytea            NOT NULL,  -- hbw_text_key(user_agent), see user_agent_days
    editor                text,
    editor_version        text,
    plugin                text,
    plugin_version        text,
    cli_version           text,
    os                    text,
    is_browser_extension  boolean          NOT NULL DEFAULT false,
    version_major         integer,
    version_minor         integer,
    version_patch         integer,
    version_prerelease    text,
    first_seen_at         timestamptz      NOT NULL,
    last_seen_at          timestamptz      NOT NULL,
    total_seconds         double precision NOT NULL,
    coding_us             bigint           NOT NULL,
    heartbeat_count       bigint           NOT NULL,
    PRIMARY KEY (user_id, agent_key)
);

-- From schema 5: user-agent rows were keyed by the text, which a long user agent overflows.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'user_agent_days' AND column_name = 'agent_key') THEN
        ALTER TABLE user_agent_days ADD COLUMN agent_key bytea;
        UPDATE user_agent_days SET agent_key = hbw_text_key(user_agent);
        ALTER TABLE user_agent_days ALTER COLUMN agent_key SET NOT NULL,
            DROP CONSTRAINT user_agent_days_pkey, ADD PRIMARY KEY (user_id, day, agent_key);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'user_agents' AND column_name = 'agent_key') THEN
        ALTER TABLE user_agents ADD COLUMN agent_key bytea;
        UPDATE user_agents SET agent_key = hbw_text_key(user_agent);
        ALTER TABLE user_agents ALTER COLUMN agent_key SET NOT NULL,
            DROP CONSTRAINT user_agents_pkey, ADD PRIMARY KEY (user_id, agent_key);
    END IF;
END $$;
-- From schema 11: one row per user agent and day, all projects together. Their rows move to
-- project '' until `hbw backfill --force` splits them (the sums per user agent stay right).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'user_agent_days' AND column_name = 'project') THEN
        ALTER TABLE user_agent_days ADD COLUMN project text NOT NULL DEFAULT '';
        ALTER TABLE user_agent_days ALTER COLUMN project DROP DEFAULT,
            DROP CONSTRAINT user_agent_days_pkey, ADD PRIMARY KEY (user_id, day, agent_key, project);
    END IF;
END $$;
DROP INDEX IF EXISTS user_agent_days_agent;
CREATE INDEX IF NOT EXISTS user_agent_days_key ON user_agent_days (user_id, agent_key);

-- From schema 6: totals had only total_seconds, the double of coding_us / 1e6, which gives the
-- integer back exactly (below ~142 years of coding time).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'project_languages', 'user_agents'] LOOP
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = t AND column_name = 'coding_us') THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN coding_us bigint', t);
            EXECUTE format('UPDATE %I SET coding_us = round(total_seconds::numeric * 1000000)::bigint', t);
            EXECUTE format('ALTER TABLE %I ALTER COLUMN coding_us SET NOT NULL', t);
        END IF;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Domain rules that must be computed next to the data
-- ---------------------------------------------------------------------------------------------

-- SPEC section 2, in one place: a heartbeat's identity. The first 16 bytes of sha256 over the UTF-8
-- of "<len>:<user_id>;<len>:<entity>;<len>:<type>;<len>:<category>;<time_us>;<len>:<project>;
-- <len>:<branch>;<len>:<language>;<t|f>", where <len> is the length in characters, an absent value
-- is "-", and time_us is the time in integer microseconds (docs/spec.md, section 2).
-- Declared STABLE, as convert_to is, so PostgreSQL inlines it into the store's statement: an
-- IMMUTABLE function with a STABLE body runs through the SQL-function executor once per row,
-- which cost the store ~6 us per heartbeat.
CREATE OR REPLACE FUNCTION hbw_identity(user_id text, entity text, type text, category text, time_us bigint,
                                        project text, branch text, language text, is_write boolean)
RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT substring(sha256(convert_to(
        length(user_id) || ':' || user_id || ';' || length(entity) || ':' || entity || ';' ||
        length(type) || ':' || type || ';' || length(category) || ':' || category || ';' ||
        time_us::text || ';' ||
        coalesce(length(project) || ':' || project, '-') || ';' ||
        coalesce(length(branch) || ':' || branch, '-') || ';' ||
        coalesce(length(language) || ':' || language, '-') || ';' ||
        CASE WHEN is_write THEN 't' ELSE 'f' END, 'UTF8')) FROM 1 FOR 16)
$$;

-- Users' own settings: the time zone (an IANA name) their days are counted in. A user without
-- a row counts in UTC. Changed only by jobs.users.set_timezone, which recomputes the user's history
-- in the same transaction's wake (docs/spec.md section 3).
CREATE TABLE IF NOT EXISTS users (
    user_id     text        PRIMARY KEY,
    timezone    text        NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- docs/spec.md section 3's rules, each in one place (the store's incremental deltas and the full
-- recomputation both use them, so they always agree). A user's day is the calendar day of their
-- time zone: hbw_zone_day and hbw_zone_day_start take the zone, for statements that look it up
-- once per user (a lookup per heartbeat costs 3.7 us; the conversion alone 0.3); hbw_day and
-- hbw_day_start look it up themselves, for everything else.
CREATE OR REPLACE FUNCTION hbw_user_zone(user_id text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT u.timezone FROM users u WHERE u.user_id = $1), 'UTC')
$$;

CREATE OR REPLACE FUNCTION hbw_zone_day(zone text, at timestamptz) RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (at AT TIME ZONE zone)::date
$$;

-- The first instant of a local day: the first whose hbw_zone_day is `day`, so the days partition
-- time (tests/integration/test_zones.py). Local midnight read as an instant is that, except where
-- the clock goes back over midnight (America/Havana in November): midnight then happens twice and
-- PostgreSQL reads the later one, so the day began one shift earlier (30 min, 1 h or 2 h: the
-- shifts there are). Where midnight does not exist (a clock moved forward at midnight), the read
-- instant is already the first of the day. One expression without FROM, so it is inlined.
CREATE OR REPLACE FUNCTION hbw_zone_day_start(zone text, day date) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN (((day::timestamp AT TIME ZONE zone) - interval '1 microsecond') AT TIME ZONE zone)::date < day
            THEN day::timestamp AT TIME ZONE zone
        WHEN (((day::timestamp AT TIME ZONE zone) - interval '30 minutes 1 microsecond') AT TIME ZONE zone)::date < day
            THEN (day::timestamp AT TIME ZONE zone) - interval '30 minutes'
        WHEN (((day::timestamp AT TIME ZONE zone) - interval '1 hour 1 microsecond') AT TIME ZONE zone)::date < day
            THEN (day::timestamp AT TIME ZONE zone) - interval '1 hour'
        ELSE (day::timestamp AT TIME ZONE zone) - interval '2 hours'
    END
$$;

CREATE OR REPLACE FUNCTION hbw_day(user_id text, at timestamptz) RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT hbw_zone_day(hbw_user_zone(user_id), at)
$$;

CREATE OR REPLACE FUNCTION hbw_day_start(user_id text, day date) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT hbw_zone_day_start(hbw_user_zone(user_id), day)
$$;

-- What a heartbeat is credited for the gap to the next one of its day (NULL: none follows).
-- Exact: a same-day gap is < 86400 s, which a double holds to well under 1 us. Two one-expression
-- functions without a FROM clause, which PostgreSQL inlines into the calling statement (the
-- gap's expression, used twice, is cheap enough for that): a FROM clause in the body ran it
-- through the SQL-function executor per row, 3.8 us against 0.45 inlined.
CREATE OR REPLACE FUNCTION hbw_credit_gap(gap_us bigint, timeout_us bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN gap_us <= timeout_us THEN gap_us ELSE 0 END
$$;

CREATE OR REPLACE FUNCTION hbw_credit(at timestamptz, next_at timestamptz, timeout_us bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hbw_credit_gap(round(date_part('epoch', next_at - at) * 1000000)::bigint, timeout_us)
$$;

-- SPEC section 3, in one place. For the given (user, UTC day) pairs, every heartbeat with the
-- microseconds it is credited: the gap to the user's next heartbeat of the same day when that gap
-- is <= the timeout, else 0; the last heartbeat of a day gets 0. Ties in time are ordered by
-- dedup_hash so the result is deterministic. Pure (STABLE, reads only), so tests call it directly.
-- (Schema 11 added category and machine to what it returns.)
DROP FUNCTION IF EXISTS hbw_credited_heartbeats(text[], date[], bigint);
-- `since` and `until` bound every user-day's times: they tell PostgreSQL which monthly partitions
-- to open before it runs (without them a recomputation cost 30% more with two years of months).
DROP FUNCTION IF EXISTS hbw_credited_heartbeats(text[], date[], bigint, timestamptz, timestamptz);
CREATE FUNCTION hbw_credited_heartbeats(user_ids text[], days date[], timeout_us bigint,
                                        since timestamptz DEFAULT '-infinity', until timestamptz DEFAULT 'infinity')
RETURNS TABLE (user_id text, day date, "time" timestamptz, dedup_hash bytea, project text,
               language text, user_agent text, category text, machine text, credited_us bigint)
LANGUAGE sql STABLE AS $$
    SELECT user_id, day, time, dedup_hash, project, language, user_agent, category, machine,
           hbw_credit(time, next_at, timeout_us)
    FROM (
        SELECT k.user_id, k.day, h.time, h.dedup_hash, h.project, h.language, h.user_agent, h.category,
               h.machine, lead(h.time) OVER w AS next_at
        FROM (SELECT DISTINCT u, d FROM unnest(user_ids, days) AS keys(u, d)) AS k(user_id, day)
        -- LATERAL with OFFSET 0 (which keeps the planner from flattening it into a plain join):
        -- one index range scan per user-day, whatever the statistics say, so a freshly filled
        -- table never gets a sequential scan per batch
        CROSS JOIN LATERAL (
            SELECT h.time, h.dedup_hash, h.project, h.language, h.user_agent, h.category, h.machine
            FROM heartbeats h
            WHERE h.user_id = k.user_id
              AND h.time >= hbw_day_start(k.user_id, k.day)
              AND h.time < hbw_day_start(k.user_id, k.day + 1)
              AND h.time >= since AND h.time < until
            OFFSET 0
        ) AS h
        WINDOW w AS (PARTITION BY k.user_id, k.day ORDER BY h.time, h.dedup_hash)
    ) AS ordered
$$;

-- The project a raw project name counts towards: the project it is an alias of, else itself
-- (SPEC section 4). The deltas apply it; hbw_alias_sources below is the same rule read backwards.
-- A one-row table function, which PostgreSQL inlines into the caller as a join (a scalar function
-- with a lookup runs through the SQL-function executor per row: 5 us instead of under 1).
CREATE OR REPLACE FUNCTION hbw_canonical_project(user_id text, raw text) RETURNS TABLE (project text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(a.project, $2)
    FROM (VALUES (1)) AS one
    LEFT JOIN project_aliases a ON a.user_id = $1 AND a.alias = $2
$$;
-- Schema 8's scalar form of the same rule, for workers of the previous release during an upgrade.
CREATE OR REPLACE FUNCTION hbw_project_of(user_id text, raw text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT project FROM hbw_canonical_project($1, $2)
$$;

-- The alias rule (SPEC section 4) in one place. For raw project names whose day rows changed (or
-- whose alias changed): every project whose totals they affect, that is each name itself and the
-- project it is an alias of, with each raw name that sums into that project. A name that is an
-- alias gets raw NULL (nothing sums into it), so its totals row is deleted: no `projects` row is
-- ever left under an alias name.
CREATE OR REPLACE FUNCTION hbw_alias_sources(user_ids text[], raw_names text[])
RETURNS TABLE (user_id text, project text, raw text)
LANGUAGE sql STABLE AS $$
    WITH targets AS (
        SELECT DISTINCT c.u AS user_id, t.project
        FROM unnest(user_ids, raw_names) AS c(u, r)
        LEFT JOIN project_aliases a ON a.user_id = c.u AND a.alias = c.r
        CROSS JOIN LATERAL (VALUES (c.r), (a.project)) AS t(project)
        WHERE t.project IS NOT NULL
    )
    SELECT t.user_id, t.project,
           CASE WHEN EXISTS (SELECT 1 FROM project_aliases a
                             WHERE a.user_id = t.user_id AND a.alias = t.project)
                THEN NULL ELSE t.project END
    FROM targets t
    UNION ALL
    SELECT t.user_id, t.project, a.alias
    FROM targets t
    JOIN project_aliases a ON a.user_id = t.user_id AND a.project = t.project
$$;

-- Which derived rows a heartbeat feeds (docs/spec.md section 4), in one place: its project's (none
-- without a project), its project's and language's ('Other' without a language; none without a
-- project), its user agent's (none without one), and its category's and machine's (always: ''
-- without a machine). The store's deltas and the recomputation both use it. The third column is
-- the second key of a day row: a languages row's language, a user agent row's raw project ('' without
-- one), an activity row's machine.
CREATE OR REPLACE FUNCTION hbw_feeds(project text, language text, user_agent text, category text, machine text)
RETURNS TABLE (job text, name text, language text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v.job, v.name, v.language
    FROM (VALUES ('projects', project, NULL::text), ('languages', project, coalesce(language, 'Other')),
                 ('user_agents', user_agent, coalesce(project, '')), ('activity', category, coalesce(machine, '')))
         AS v(job, name, language)
    WHERE v.name IS NOT NULL
$$;

-- Schema 10's three-argument form (no activity rows), which workers of that release call until
-- they are restarted; `hbw backfill --force` after the upgrade fills activity_days for history.
CREATE OR REPLACE FUNCTION hbw_feeds(project text, language text, user_agent text)
RETURNS TABLE (job text, name text, language text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT * FROM hbw_feeds(project, language, user_agent, NULL, NULL) WHERE job <> 'activity'
$$;

-- (Schema 6 had one function per day table; hbw_day_rows replaces them.)
DROP FUNCTION IF EXISTS hbw_project_days(text[], date[], bigint);
DROP FUNCTION IF EXISTS hbw_language_days(text[], date[], bigint);
DROP FUNCTION IF EXISTS hbw_user_agent_days(text[], date[], bigint);

-- What each derived day row is, computed from the raw heartbeats of the given user-days in one
-- pass: every job's rows at once. Recomputation writes exactly these rows; `hbw verify` compares
-- the stored ones to them.
DROP FUNCTION IF EXISTS hbw_day_rows(text[], date[], bigint);
CREATE OR REPLACE FUNCTION hbw_day_rows(user_ids text[], days date[], timeout_us bigint,
                                        since timestamptz DEFAULT '-infinity', until timestamptz DEFAULT 'infinity')
RETURNS TABLE (job text, user_id text, day date, name text, language text, coding_us bigint,
               heartbeat_count integer, first_at timestamptz, last_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.job, c.user_id, c.day, f.name, f.language, sum(c.credited_us)::bigint, count(*)::integer,
           min(c.time), max(c.time)
    FROM hbw_credited_heartbeats(user_ids, days, timeout_us, since, until) c
    CROSS JOIN LATERAL hbw_feeds(c.project, c.language, c.user_agent, c.category, c.machine) f
    GROUP BY f.job, c.user_id, c.day, f.name, f.language
$$;

-- What each total is: the sum of the day rows that feed it, with the alias map applied (so totals
-- keep the history of pruned days, and an alias change needs no raw heartbeats).
-- (Schema 6's returned total_seconds; these return the exact coding_us, so they are replaced.)
DROP FUNCTION IF EXISTS hbw_project_totals(text[], text[]);
DROP FUNCTION IF EXISTS hbw_language_totals(text[], text[]);
DROP FUNCTION IF EXISTS hbw_user_agent_totals(text[], text[]);

-- A total's seconds, from its exact microseconds.
CREATE OR REPLACE FUNCTION hbw_seconds(coding_us bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (coding_us / 1e6)::double precision
$$;

CREATE FUNCTION hbw_project_totals(user_ids text[], raw_names text[])
RETURNS TABLE (user_id text, name text, first_at timestamptz, last_at timestamptz,
               coding_us bigint, heartbeat_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.user_id, s.project, min(d.first_at), max(d.last_at),
           sum(d.coding_us)::bigint, sum(d.heartbeat_count)::bigint
    FROM hbw_alias_sources(user_ids, raw_names) s
    JOIN project_days d ON d.user_id = s.user_id AND d.project = s.raw
    GROUP BY s.user_id, s.project
$$;

-- Summed per raw project first, then across the raw names of each project: a busy user's
-- language day rows are then grouped one project at a time on one key, not sorted all together
-- on three (2x cheaper for a user with years of history; the sums are the same integers).
CREATE FUNCTION hbw_language_totals(user_ids text[], raw_names text[])
RETURNS TABLE (user_id text, project text, language text, first_at timestamptz,
               last_at timestamptz, coding_us bigint, heartbeat_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.user_id, s.project, d.language, min(d.first_at), max(d.last_at),
           sum(d.coding_us)::bigint, sum(d.heartbeat_count)::bigint
    FROM hbw_alias_sources(user_ids, raw_names) s
    CROSS JOIN LATERAL (
        SELECT r.language, min(r.first_at) AS first_at, max(r.last_at) AS last_at,
               sum(r.coding_us) AS coding_us, sum(r.heartbeat_count) AS heartbeat_count
        FROM language_days r
        WHERE r.user_id = s.user_id AND r.project = s.raw
        GROUP BY r.language
    ) AS d
    GROUP BY s.user_id, s.project, d.language
$$;

CREATE FUNCTION hbw_user_agent_totals(user_ids text[], user_agents text[])
RETURNS TABLE (user_id text, user_agent text, first_at timestamptz, last_at timestamptz,
               coding_us bigint, heartbeat_count bigint)
LANGUAGE sql STABLE AS $$
    SELECT d.user_id, d.user_agent, min(d.first_at), max(d.last_at),
           sum(d.coding_us)::bigint, sum(d.heartbeat_count)::bigint
    FROM (SELECT DISTINCT u, hbw_text_key(a) AS a FROM unnest(user_ids, user_agents) AS k(u, a)) AS k
    JOIN user_agent_days d ON d.user_id = k.u AND d.agent_key = k.a
    GROUP BY d.user_id, d.user_agent
$$;

-- A fixed #rrggbb per project name (md5 is stable across PostgreSQL versions and machines).
CREATE OR REPLACE FUNCTION hbw_project_color(name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1',
                  '#ff9da7', '#9c755f', '#bab0ac', '#1f77b4', '#2ca02c', '#d62728', '#9467bd',
                  '#17becf', '#bcbd22'])[1 + get_byte(decode(md5(name), 'hex'), 0) % 16]
$$;

-- ---------------------------------------------------------------------------------------------
-- Operations
-- ---------------------------------------------------------------------------------------------

-- Reprocess and backfill runs, one row per run key (for example "reprocess:2024-03-01"). A run
-- holds an advisory lock on its key while it works (in a transaction it keeps open), so an
-- overlapping run of the same key skips instead of doubling the work, and a crashed run's lock
-- goes with its connection. The
-- cursor (last user-day handed to the workers) lets an interrupted run resume where it stopped.
CREATE TABLE IF NOT EXISTS reprocess_runs (
    run_key      text        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('reprocess', 'backfill')),
    since        date        NOT NULL,
    until        date        NOT NULL,
    user_id      text,
    status       text        NOT NULL CHECK (status IN ('running', 'enqueued', 'done', 'failed')),
    cursor_day   date,
    cursor_user  text,
    user_days    integer     NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    error        text,
    host         text,
    pid          integer
);

-- API keys of the WakaTime-compatible HTTP ingest (`hbw serve`, `hbw keys`). Only a SHA-256 of the
-- normalised key is kept: keys are random UUIDs (122 bits), so a slow password hash would add
-- nothing but cost on every request. `hint` (the last 4 characters) tells keys apart in listings.
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash    bytea       PRIMARY KEY,
    user_id     text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    hint        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);

CREATE TABLE IF NOT EXISTS hbw_schema (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    version     integer     NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Upgrades
-- ---------------------------------------------------------------------------------------------

-- From schema 1-2: the hash alone was the primary key (in another format) and (user_id, time) had
-- its own index. Rehash in the current format, drop rows that turn out to be duplicates, and make
-- (user_id, time, dedup_hash) the unique key.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'heartbeats_pkey') THEN
        ALTER TABLE heartbeats DROP CONSTRAINT heartbeats_pkey;
        UPDATE heartbeats SET dedup_hash = hbw_identity(
            user_id, entity, type, category, (extract(epoch FROM time) * 1000000)::bigint, project, branch,
            language, is_write);
        DELETE FROM heartbeats a USING heartbeats b
        WHERE a.user_id = b.user_id AND a.time = b.time AND a.dedup_hash = b.dedup_hash AND a.ctid > b.ctid;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'heartbeats_identity') THEN
        ALTER TABLE heartbeats ADD CONSTRAINT heartbeats_identity UNIQUE (user_id, time, dedup_hash);
    END IF;
END $$;
DROP INDEX IF EXISTS heartbeats_user_time;

-- This month's partition and the next two, ahead of the heartbeats that will need them (`hbw db
-- init`, each starting worker, `hbw db migrate`'s new table).
CREATE OR REPLACE FUNCTION hbw_ensure_months_ahead(parent text DEFAULT 'heartbeats') RETURNS integer
LANGUAGE sql AS $$
    SELECT hbw_ensure_partitions(ARRAY(
        SELECT generate_series(date_trunc('month', now() AT TIME ZONE 'UTC'),
                               now() AT TIME ZONE 'UTC' + interval '2 months', interval '1 month')::date), parent)
$$;
SELECT hbw_ensure_months_ahead();
