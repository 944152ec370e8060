-- Claims, fenced steps, the running-commands budget and the quota section. Phases are passed in
-- from the pure step table (aisd.phases) as :from (a JSON array) and :to, never spelled here.
-- A fenced statement names the claim it was issued under (:claimer, :epoch): when another
-- claimer took the import over, or it ended meanwhile, it changes no row.

-- name: register_claimer
INSERT INTO claimers (id, started_at, lease_until, host, pid)
VALUES (:id, :now, :lease_until, :host, :pid)

-- name: end_other_leases
-- A sole claimer (one host holding the instance lock): every other lease is over at once.
DELETE FROM claimers WHERE id <> :id

-- name: renew_claimer
-- A lease ended by another claimer (or forgotten after it lapsed) is never renewed: what it
-- held may already be adopted. The claimer's own monotonic deadline guards its sends.
UPDATE claimers SET lease_until = :lease_until WHERE id = :id

-- name: end_claimer
DELETE FROM claimers WHERE id = :id

-- name: ensure_slots
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :ceiling)
INSERT INTO slots (n) SELECT n FROM s WHERE true
ON CONFLICT (n) DO NOTHING

-- name: release_gone_queued
-- Queued imports claimed by a claimer whose lease lapsed: back to the queue, slot freed. On the
-- index of claimed queued imports (a handful), not the whole queue (migration 0013).
UPDATE imports INDEXED BY imports_open_held SET claimed_by = NULL
WHERE phase <> 'done' AND phase = 'queued' AND claimed_by IS NOT NULL AND claimed_by <> :claimer
  AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > :now)
RETURNING id

-- name: free_slot
UPDATE slots SET import_id = NULL, taken_at = NULL WHERE import_id = :id

-- name: adopt_in_flight
-- In-flight imports nobody live drives (a claimer that died, or one that let go): adopted with
-- the slot they hold, whether or not their next step is due, so they count against the budget.
UPDATE imports SET claimed_by = :claimer, claim_epoch = claim_epoch + 1
WHERE phase <> 'done' AND phase IN (SELECT value FROM json_each(:in_flight))
  AND (claimed_by IS NULL OR (claimed_by <> :claimer
       AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > :now)))
RETURNING id

-- name: lapsed_starting
-- Imports adopt_in_flight is about to take in phase starting from a claimer whose lease lapsed:
-- the reply to their Default Import may still reach that claimer. Run at every claiming round:
-- phase <> 'done' puts it on the partial index of open imports (SQLite does not infer it from
-- phase = 'starting'), instead of a scan of every import ever made.
SELECT id FROM imports
WHERE phase = 'starting' AND phase <> 'done' AND command_id IS NULL AND claimed_by IS NOT NULL
  AND claimed_by <> :claimer
  AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > :now)

-- name: forget_lapsed_claimers
DELETE FROM claimers
WHERE lease_until <= :now
  AND NOT EXISTS (SELECT 1 FROM imports AS i WHERE i.claimed_by = claimers.id AND i.phase <> 'done')

-- name: set_ceiling
UPDATE budget SET ceiling = :ceiling WHERE id = 1

-- name: budget
SELECT b.ceiling, b.lowered_to, b.strikes,
       (SELECT COUNT(*) FROM slots WHERE import_id IS NOT NULL) AS held
FROM budget AS b WHERE b.id = 1

-- name: set_budget
UPDATE budget SET lowered_to = :lowered_to, strikes = :strikes WHERE id = 1

-- name: claimable_queued
-- Initial imports first (a person waits), then the oldest: read in that order from the index of
-- claimable imports, as many as are taken (migration 0013), not the whole queue sorted.
SELECT i.id FROM imports AS i INDEXED BY imports_open_queue
WHERE i.phase <> 'done' AND i.phase = 'queued' AND i.claimed_by IS NULL
  AND (i.not_before IS NULL OR i.not_before <= :now)
ORDER BY i.kind = 'refresh', i.created_at, i.id
LIMIT :limit

-- name: take_slot
UPDATE slots SET import_id = :id, taken_at = :now
WHERE n = (SELECT n FROM slots WHERE import_id IS NULL AND n <= :limit ORDER BY n LIMIT 1)

-- name: claim_import
UPDATE imports SET claimed_by = :claimer, claim_epoch = claim_epoch + 1
WHERE id = :id
RETURNING claim_epoch

-- name: claimed_jobs
SELECT i.id, i.kind, i.phase, o.external_id AS owner_external_id, i.token_id, i.since,
       i.created_at, s.session_id, s.signature, i.command_id, i.polls,
       i.default_import_attempts, i.attempts, i.not_before, i.started_at, i.last_poll_at,
       CASE WHEN i.kind = 'refresh' AND i.session_ref IS NULL
            THEN t.multiple_access_id END AS multiple_access_id,
       i.claimed_by, i.claim_epoch
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
LEFT JOIN sessions AS s ON s.id = i.session_ref
LEFT JOIN tokens AS t ON t.id = i.token_id
WHERE i.id IN (SELECT value FROM json_each(:ids))
ORDER BY i.phase = 'queued', i.kind = 'refresh', i.created_at, i.id

-- name: fenced_import
SELECT i.id, i.owner_id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state,
       i.phase, i.polls, i.created_at, i.started_at, i.finished_at, i.default_import_attempts
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id = :id AND i.claimed_by = :claimer AND i.claim_epoch = :epoch
  AND i.phase IN (SELECT value FROM json_each(:from))

-- name: step_reuse_sent
UPDATE imports
SET phase = :to, state = :state, started_at = COALESCE(started_at, :now), not_before = NULL
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: step_import_sent
UPDATE imports
SET phase = :to, state = :state, started_at = COALESCE(started_at, :now),
    default_import_attempts = default_import_attempts + 1, not_before = NULL
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: step_session
UPDATE imports SET session_ref = :session_ref, phase = :to, not_before = NULL
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: step_command
-- With the ownerExternalId the Default Import's reply echoed (kept per import). Also from the
-- Default Import's sender after its claim lapsed (:ordinal: which Default Import it sent, NULL
-- when it sent none), while nobody moved the import on: still starting, no command id, no later
-- Default Import recorded. The check is on the row itself, so a concurrent one is seen.
UPDATE imports SET command_id = :command_id, phase = :to, not_before = :not_before,
    kontomatik_owner_id = COALESCE(:owner_echo, kontomatik_owner_id)
WHERE id = :id AND phase IN (SELECT value FROM json_each(:from))
  AND ((claimed_by = :claimer AND claim_epoch = :epoch)
       OR (command_id IS NULL AND default_import_attempts = :ordinal))

-- name: access_ordinal
-- Which Default Import of its import a ledger row is (1 for the first; 0 when the row is not
-- one of them): the import's count of them is its default_import_attempts, moved in the same
-- transaction as each ledger row.
SELECT count(*) AS n FROM accesses
WHERE import_id = :id AND kind = 'default_import' AND id <= :access
  AND EXISTS (SELECT 1 FROM accesses AS own
              WHERE own.id = :access AND own.import_id = :id
                AND own.kind = 'default_import')

-- name: step_poll
UPDATE imports SET polls = polls + 1, last_poll_at = :now, not_before = :not_before
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: step_wait
UPDATE imports
SET not_before = :not_before, attempts = COALESCE(:attempts, attempts), phase = :to
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: step_requeue
UPDATE imports
SET not_before = :not_before, attempts = COALESCE(:attempts, attempts), phase = :to,
    state = :state, claimed_by = NULL
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch
  AND phase IN (SELECT value FROM json_each(:from))

-- name: let_go
-- The claimer stops driving an import it still holds (a step failed, a graceful stop): a later
-- claim adopts it; an in-flight one keeps its slot.
UPDATE imports SET claimed_by = NULL, not_before = COALESCE(:not_before, not_before)
WHERE id = :id AND claimed_by = :claimer AND claim_epoch = :epoch AND phase <> 'done'

-- name: let_go_all
UPDATE imports SET claimed_by = NULL
WHERE phase <> 'done' AND claimed_by = :claimer
RETURNING id, phase

-- name: insert_refresh_once
-- The partial unique index imports_one_open_refresh drops a second open refresh of a token.
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
VALUES (:id, :owner_id, :token_id, NULL, NULL, 'refresh', 'queued', 'queued', :since, :now)
ON CONFLICT DO NOTHING

-- name: next_event_ids
-- MAX(id) (the rowid's end, no scan) keeps it right after rows written by bulk SQL outside aisd.
UPDATE counters SET value = MAX(value, (SELECT COALESCE(MAX(id), 0) FROM events)) + :n
WHERE name = 'event_id' RETURNING value

-- name: insert_event_with_id
INSERT INTO events (id, at, type, owner_external_id, token_id, import_id, data)
VALUES (:id, :at, :type, :owner_external_id, :token_id, :import_id, :data)

-- name: insert_consent_once
INSERT INTO consents (owner_id, session_id, target, refresh_until, max_imports, created_at)
VALUES (:owner_id, :session_id, :target, :refresh_until, :max_imports, :now)
ON CONFLICT (session_id) DO NOTHING
RETURNING id

-- name: open_jobs
SELECT i.id, i.kind, i.phase, o.external_id AS owner_external_id, i.token_id, i.since,
       i.created_at, s.session_id, s.signature, i.command_id, i.polls,
       i.default_import_attempts, i.attempts, i.not_before, i.started_at, i.last_poll_at,
       CASE WHEN i.kind = 'refresh' AND i.session_ref IS NULL
            THEN t.multiple_access_id END AS multiple_access_id,
       i.claimed_by, i.claim_epoch
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
LEFT JOIN sessions AS s ON s.id = i.session_ref
LEFT JOIN tokens AS t ON t.id = i.token_id
WHERE i.phase <> 'done'
ORDER BY i.kind = 'refresh', i.created_at, i.id

-- name: queue_refreshes
-- The tick's queued refreshes in one statement: :refreshes is a JSON array of {id, token_id,
-- since}; each token's owner comes from the join. The partial unique index
-- imports_one_open_refresh drops a second open refresh of a token; only rows inserted are
-- returned. ('WHERE true' keeps ON CONFLICT from being read as a join constraint.)
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
SELECT json_extract(r.value, '$.id'), t.owner_id, t.id, NULL, NULL, 'refresh', 'queued',
       'queued', json_extract(r.value, '$.since'), :now
FROM json_each(:refreshes) AS r
JOIN tokens AS t ON t.id = json_extract(r.value, '$.token_id')
WHERE true
ON CONFLICT DO NOTHING
RETURNING id, token_id

-- name: clear_next_refresh_of_tokens
UPDATE tokens SET next_refresh_at = NULL WHERE id IN (SELECT value FROM json_each(:token_ids))

-- name: commit_without_fsync
-- For a claim's commit only (see _sync.transaction): WAL order makes the next FULL commit carry it.
PRAGMA synchronous = NORMAL

-- name: commit_with_fsync
PRAGMA synchronous = FULL

-- name: savepoint_batch
SAVEPOINT batch

-- name: rollback_to_batch
ROLLBACK TO batch

-- name: release_batch
RELEASE batch

-- name: consents_by_sessions
-- consent_by_session for a whole intake batch at once.
SELECT c.session_id, i.id AS import_id, t.id AS token_id,
       o.external_id AS owner_external_id, s.signature AS session_signature,
       t.multiple_access_id
FROM consents AS c
JOIN owners AS o ON o.id = c.owner_id
JOIN imports AS i ON i.consent_id = c.id AND i.kind = 'initial'
LEFT JOIN tokens AS t ON t.consent_id = c.id
LEFT JOIN sessions AS s ON s.session_id = c.session_id
WHERE c.session_id IN (SELECT value FROM json_each(:session_ids))

-- name: insert_owners_missing
-- An intake batch's owners not stored yet, one statement for the batch: :rows is a JSON array of
-- {external_id, now}. One INSERT ... SELECT for the batch instead of a statement per consent:
-- each statement opens every index of its table again, and the state_counts trigger on imports
-- cost 30-50 us a row run that way, 2 in one statement (measured on this schema, 50 a batch).
-- ('WHERE true' keeps ON CONFLICT from being read as a join constraint.)
INSERT INTO owners (external_id, created_at)
SELECT json_extract(r.value, '$.external_id'), json_extract(r.value, '$.now')
FROM json_each(:rows) AS r
WHERE true
ON CONFLICT (external_id) DO NOTHING

-- name: owner_ids
SELECT external_id, id FROM owners WHERE external_id IN (SELECT value FROM json_each(:external_ids))

-- name: insert_consents_new
-- No ON CONFLICT: a consent already stored under the sessionId fails the batch's fast path,
-- and its consents are then written one at a time (see _intake._write_batch). :rows as above;
-- rows go in in the array's order (json_each's), so that ids follow it.
INSERT INTO consents (owner_id, session_id, target, refresh_until, max_imports, created_at)
SELECT json_extract(r.value, '$.owner_id'),
       json_extract(r.value, '$.session_id'),
       json_extract(r.value, '$.target'),
       json_extract(r.value, '$.refresh_until'),
       json_extract(r.value, '$.max_imports'),
       json_extract(r.value, '$.now')
FROM json_each(:rows) AS r
RETURNING session_id, id

-- name: upsert_sessions
INSERT INTO sessions (owner_id, session_id, signature, created_at)
SELECT json_extract(r.value, '$.owner_id'),
       json_extract(r.value, '$.session_id'),
       json_extract(r.value, '$.signature'),
       json_extract(r.value, '$.now')
FROM json_each(:rows) AS r
WHERE true
ON CONFLICT (session_id) DO UPDATE SET signature = excluded.signature
RETURNING session_id, id

-- name: insert_tokens
-- insert_token for a whole intake batch (:rows as above).
INSERT INTO tokens (id, owner_id, consent_id, multiple_access_id, state, created_at, expires_at,
                    state_changed_at, refresh_until, max_imports, next_refresh_at,
                    next_warning_at)
SELECT json_extract(r.value, '$.id'),
       json_extract(r.value, '$.owner_id'),
       json_extract(r.value, '$.consent_id'),
       json_extract(r.value, '$.multiple_access_id'),
       'active',
       json_extract(r.value, '$.now'),
       json_extract(r.value, '$.expires_at'),
       json_extract(r.value, '$.now'),
       json_extract(r.value, '$.refresh_until'),
       json_extract(r.value, '$.max_imports'),
       json_extract(r.value, '$.now'),
       json_extract(r.value, '$.now')
FROM json_each(:rows) AS r

-- name: insert_imports
-- insert_import for a whole intake batch (:rows as above).
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
SELECT json_extract(r.value, '$.id'),
       json_extract(r.value, '$.owner_id'),
       json_extract(r.value, '$.token_id'),
       json_extract(r.value, '$.consent_id'),
       json_extract(r.value, '$.session_ref'),
       json_extract(r.value, '$.kind'),
       'queued',
       'queued',
       json_extract(r.value, '$.since'),
       json_extract(r.value, '$.now')
FROM json_each(:rows) AS r

-- name: savepoint_each
-- One write of a group commit (see _sync.group_transaction).
SAVEPOINT each

-- name: rollback_to_each
ROLLBACK TO each

-- name: release_each
RELEASE each
