-- Webhook cursors and the reads of /metrics (aiosql-style named blocks).

-- name: webhook_register
-- A new endpoint starts at the feed's end: it is not flooded with the whole history.
INSERT INTO webhook_endpoints (url, cursor, created_at)
VALUES (:url, (SELECT COALESCE(MAX(id), 0) FROM events), :now)
ON CONFLICT (url) DO NOTHING

-- name: webhook_rows
SELECT url, cursor, attempts, next_attempt_at, last_success_at, last_error, last_error_at
FROM webhook_endpoints
WHERE url IN (SELECT value FROM json_each(:urls))

-- name: webhook_advance
-- Compare-and-set: a redelivery that moved the cursor meanwhile wins.
UPDATE webhook_endpoints
SET cursor = :cursor, attempts = 0, next_attempt_at = NULL,
    last_success_at = COALESCE(:now, last_success_at)
WHERE url = :url AND cursor = :expected

-- name: webhook_failed
UPDATE webhook_endpoints
SET attempts = :attempts, next_attempt_at = :next_attempt_at, last_error = :error,
    last_error_at = :now
WHERE url = :url AND cursor = :expected

-- name: webhook_rewind
UPDATE webhook_endpoints
SET cursor = MIN(cursor, :cursor), attempts = 0, next_attempt_at = NULL
WHERE url IN (SELECT value FROM json_each(:urls))

-- name: webhook_backlog
-- Served by the events primary key: the cost grows with the backlog, not the feed.
SELECT COUNT(*) AS n, MIN(at) AS oldest
FROM events
WHERE id > :cursor AND (:all_types OR type IN (SELECT value FROM json_each(:types)))

-- name: metrics_open_imports
-- Open imports only (the partial index imports_open): queued and running, by kind.
SELECT kind, state, COUNT(*) AS n FROM imports WHERE phase <> 'done' GROUP BY kind, state

-- name: metrics_tokens_expiring
SELECT COUNT(*) FROM tokens WHERE state = 'active' AND expires_at <= :until

-- name: metrics_tokens_stale
SELECT
    (SELECT COUNT(*) FROM tokens
     WHERE state = 'active' AND last_import_at IS NOT NULL AND last_import_at < :cutoff)
  + (SELECT COUNT(*) FROM tokens
     WHERE state = 'active' AND last_import_at IS NULL AND created_at < :cutoff)

-- name: backup_integrity
PRAGMA integrity_check

-- name: backup_standalone
-- A backup is one self-contained file: no -wal beside it to lose.
PRAGMA journal_mode = DELETE

-- name: backup_counts
-- The tables every schema version has, counted for the summary `aisd backup` prints.
SELECT 'owners' AS name, COUNT(*) AS n FROM owners
UNION ALL SELECT 'consents', COUNT(*) FROM consents
UNION ALL SELECT 'tokens', COUNT(*) FROM tokens
UNION ALL SELECT 'imports', COUNT(*) FROM imports
UNION ALL SELECT 'accounts', COUNT(*) FROM accounts
UNION ALL SELECT 'transactions', COUNT(*) FROM transactions
UNION ALL SELECT 'events', COUNT(*) FROM events

-- name: backup_feed_heads
-- The last event id and change sequence value a database handed out; a restore carries them
-- into the restored copy so that ids handed out after the backup are never handed out again.
SELECT 'event_id' AS name, MAX(COALESCE((SELECT value FROM counters WHERE name = 'event_id'), 0),
                               COALESCE((SELECT MAX(id) FROM events), 0)) AS value
UNION ALL
SELECT 'change_seq', COALESCE((SELECT value FROM counters WHERE name = 'change_seq'), 0)

-- name: restore_carry_head
UPDATE counters SET value = MAX(value, :value) WHERE name = :name

-- name: backup_tables
SELECT name FROM sqlite_master WHERE type = 'table'

-- name: backup_source_pragmas
-- The live database is only read: a backup never writes to it.
PRAGMA busy_timeout = 5000;
PRAGMA query_only = ON;
