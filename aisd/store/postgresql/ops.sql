-- Webhook cursors and the reads of /metrics: the SQLite backend's ops.sql for PostgreSQL.
-- (SQLite's backup statements have no namesakes: back PostgreSQL up with its own tools.)

-- name: webhook_register
INSERT INTO webhook_endpoints (url, cursor, created_at)
VALUES (%(url)s, (SELECT COALESCE(MAX(id), 0) FROM events), %(now)s)
ON CONFLICT (url) DO NOTHING

-- name: webhook_rows
SELECT url, cursor, attempts, next_attempt_at, last_success_at, last_error, last_error_at
FROM webhook_endpoints
WHERE url IN (SELECT jsonb_array_elements_text(%(urls)s::jsonb))

-- name: webhook_advance
-- Compare-and-set: a redelivery (or another daemon) that moved the cursor meanwhile wins.
UPDATE webhook_endpoints
SET cursor = %(cursor)s, attempts = 0, next_attempt_at = NULL,
    last_success_at = COALESCE(%(now)s, last_success_at)
WHERE url = %(url)s AND cursor = %(expected)s

-- name: webhook_failed
UPDATE webhook_endpoints
SET attempts = %(attempts)s, next_attempt_at = %(next_attempt_at)s, last_error = %(error)s,
    last_error_at = %(now)s
WHERE url = %(url)s AND cursor = %(expected)s

-- name: webhook_rewind
UPDATE webhook_endpoints
SET cursor = LEAST(cursor, %(cursor)s), attempts = 0, next_attempt_at = NULL
WHERE url IN (SELECT jsonb_array_elements_text(%(urls)s::jsonb))

-- name: webhook_backlog
SELECT COUNT(*) AS n, MIN(at) AS oldest
FROM events
WHERE id > %(cursor)s
  AND (%(all_types)s::boolean OR type IN (SELECT jsonb_array_elements_text(%(types)s::jsonb)))

-- name: metrics_open_imports
SELECT kind, state, COUNT(*) AS n FROM imports WHERE phase <> 'done' GROUP BY kind, state

-- name: metrics_tokens_expiring
SELECT COUNT(*) FROM tokens WHERE state = 'active' AND expires_at <= %(until)s

-- name: metrics_tokens_stale
SELECT
    (SELECT COUNT(*) FROM tokens
     WHERE state = 'active' AND last_import_at IS NOT NULL AND last_import_at < %(cutoff)s)
  + (SELECT COUNT(*) FROM tokens
     WHERE state = 'active' AND last_import_at IS NULL AND created_at < %(cutoff)s)
