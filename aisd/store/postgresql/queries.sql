-- Named queries of the PostgreSQL backend: migrations, intake, reads. Parameters are
-- psycopg's %(name)s; times are the schema's ISO text (see migrations/0001_initial.sql).

-- name: migration_lock
SELECT pg_advisory_xact_lock(%(key)s);

-- name: create_schema_versions
CREATE TABLE IF NOT EXISTS aisd_schema_versions (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) FROM aisd_schema_versions;

-- name: record_schema_version
INSERT INTO aisd_schema_versions (version, name) VALUES (%(version)s, %(name)s);

-- name: ping
SELECT 1;
