-- 0010_claims_and_slots: the guarantees a single process used to keep in memory, kept by the
-- database instead, so that any process holding a lease can keep them.
--
-- claimers: one row per daemon start (a lease renewed by heartbeats). An import is driven only
-- by the claimer named in imports.claimed_by while its lease runs; every claim bumps
-- imports.claim_epoch, and every pipeline write compares both (a fenced step).
-- slots: the AISD_MAX_RUNNING_COMMANDS budget as rows. A slot names the import whose command
-- holds it and is taken in the transaction that claims the import; budget keeps the limit
-- lowered after JobsQuotaExceeded, shared by every claimer.

CREATE TABLE claimers (
    id              TEXT PRIMARY KEY,
    started_at      TEXT NOT NULL,
    lease_until     TEXT NOT NULL,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL
);

ALTER TABLE imports ADD COLUMN claimed_by TEXT;
ALTER TABLE imports ADD COLUMN claim_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE slots (
    n           INTEGER PRIMARY KEY,
    import_id   TEXT UNIQUE REFERENCES imports(id) ON DELETE SET NULL,
    taken_at    TEXT
);

CREATE TABLE budget (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    ceiling     INTEGER NOT NULL DEFAULT 8,  -- AISD_MAX_RUNNING_COMMANDS of the last claimer
    lowered_to  INTEGER,  -- NULL: the ceiling applies
    strikes     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO budget (id, ceiling, lowered_to, strikes) VALUES (1, 8, NULL, 0);

-- Commands already in flight when this version first starts hold a slot each, as they would
-- have had they been claimed under it.
INSERT INTO slots (n, import_id, taken_at)
SELECT ROW_NUMBER() OVER (ORDER BY created_at, id), id, created_at
FROM imports WHERE phase IN ('reusing', 'ready', 'starting', 'polling');

-- One open refresh per token, kept by the database: a second insert conflicts and is dropped.
-- Duplicates from before (none should exist) are left alone by failing all but the oldest.
UPDATE imports SET state = 'failed', phase = 'done', error_name = 'DuplicateRefresh',
                   error_message = 'A second open refresh of the same token.',
                   finished_at = created_at
WHERE kind = 'refresh' AND phase = 'queued' AND EXISTS (
    SELECT 1 FROM imports AS o
    WHERE o.token_id = imports.token_id AND o.kind = 'refresh' AND o.phase <> 'done'
      AND (o.created_at, o.id) < (imports.created_at, imports.id)
);
CREATE UNIQUE INDEX imports_one_open_refresh ON imports(token_id)
WHERE kind = 'refresh' AND phase <> 'done';

-- Event ids come from a counter row updated inside the appending transaction: on a backend
-- with concurrent writers the row lock orders ids by commit, so a reader following id > after
-- never skips an event that commits late.
INSERT INTO counters (name, value)
SELECT 'event_id', COALESCE(MAX(id), 0) FROM events WHERE true
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
