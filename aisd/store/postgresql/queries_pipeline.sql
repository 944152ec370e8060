-- The PostgreSQL backend's statements: claims, fenced steps, the budget, leases. The same names as the SQLite
-- backend's, so the backend-neutral step code runs on either; %(name)s and %s parameters.

-- name: register_claimer
-- The lease runs on the database's clock: its length is what the caller asks (lease_until - now),
-- its start is now as the database sees it, whatever the daemon's host clock says.
INSERT INTO claimers (id, started_at, heartbeat_at, lease_until, host, pid)
VALUES (%(id)s, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + (%(lease_until)s::timestamptz - %(now)s::timestamptz), %(host)s,
        %(pid)s)

-- name: end_other_leases
-- A sole claimer (one host holding the instance lock): every other lease is over at once.
DELETE FROM claimers WHERE id <> %(id)s

-- name: renew_claimer
-- A lease that lapsed, or was ended by another claimer, is never renewed: what it held may
-- already be adopted. The claimer's own monotonic deadline guards its sends meanwhile.
UPDATE claimers
SET heartbeat_at = clock_timestamp(),
    lease_until = clock_timestamp() + (%(lease_until)s::timestamptz - %(now)s::timestamptz)
WHERE id = %(id)s AND lease_until > clock_timestamp()

-- name: end_claimer
DELETE FROM claimers WHERE id = %(id)s

-- name: ensure_slots
INSERT INTO slots (n) SELECT generate_series(1, %(ceiling)s)
ON CONFLICT (n) DO NOTHING

-- name: release_gone_queued
-- Queued imports claimed by a claimer whose lease lapsed: back to the queue, slot freed.
UPDATE imports SET claimed_by = NULL
WHERE phase <> 'done' AND phase = 'queued' AND claimed_by IS NOT NULL AND claimed_by <> %(claimer)s
  AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > clock_timestamp())
RETURNING id

-- name: free_slot
UPDATE slots SET import_id = NULL, taken_at = NULL WHERE import_id = %(id)s

-- name: adopt_in_flight
-- In-flight imports nobody live drives (a claimer that died, or one that let go): adopted with
-- the slot they hold, whether or not their next step is due, so they count against the budget.
UPDATE imports SET claimed_by = %(claimer)s, claim_epoch = claim_epoch + 1
WHERE phase <> 'done' AND phase IN (SELECT jsonb_array_elements_text(%(in_flight)s::jsonb))
  AND (claimed_by IS NULL OR (claimed_by <> %(claimer)s
       AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > clock_timestamp())))
RETURNING id

-- name: lapsed_starting
-- Imports adopt_in_flight is about to take in phase starting from a claimer whose lease lapsed:
-- the reply to their Default Import may still reach that claimer. Run at every claiming round:
-- phase <> 'done' puts it on the partial index of open imports (SQLite does not infer it from
-- phase = 'starting'), instead of a scan of every import ever made.
SELECT id FROM imports
WHERE phase = 'starting' AND phase <> 'done' AND command_id IS NULL AND claimed_by IS NOT NULL
  AND claimed_by <> %(claimer)s
  AND claimed_by NOT IN (SELECT id FROM claimers WHERE lease_until > clock_timestamp())

-- name: forget_lapsed_claimers
DELETE FROM claimers
WHERE lease_until <= clock_timestamp()
  AND NOT EXISTS (SELECT 1 FROM imports AS i WHERE i.claimed_by = claimers.id AND i.phase <> 'done')

-- name: set_ceiling
UPDATE budget SET ceiling = %(ceiling)s WHERE id = 1

-- name: budget
-- The budget row is locked until commit: claims and budget moves run one after the other across
-- daemons, so a lowered limit is never overshot by two claimers counting at once.
SELECT b.ceiling, b.lowered_to, b.strikes,
       (SELECT COUNT(*) FROM slots WHERE import_id IS NOT NULL) AS held
FROM budget AS b WHERE b.id = 1
FOR UPDATE OF b

-- name: set_budget
UPDATE budget SET lowered_to = %(lowered_to)s, strikes = %(strikes)s WHERE id = 1

-- name: claimable_queued
-- Initial imports first (a person waits), then the oldest.
SELECT i.id FROM imports AS i
WHERE i.phase <> 'done' AND i.phase = 'queued' AND i.claimed_by IS NULL
  AND (i.not_before IS NULL OR i.not_before <= %(now)s)
ORDER BY i.kind = 'refresh', i.created_at, i.id
LIMIT %(limit)s

-- name: take_slot
-- SKIP LOCKED: a slot another claimer is taking is passed over, never shared; FOR UPDATE
-- re-checks that the row is still free once locked.
UPDATE slots SET import_id = %(id)s, taken_at = %(now)s
WHERE n = (SELECT n FROM slots WHERE import_id IS NULL AND n <= %(limit)s ORDER BY n LIMIT 1
           FOR UPDATE SKIP LOCKED)

-- name: claim_import
UPDATE imports SET claimed_by = %(claimer)s, claim_epoch = claim_epoch + 1
WHERE id = %(id)s
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
WHERE i.id IN (SELECT jsonb_array_elements_text(%(ids)s::jsonb))
ORDER BY i.phase = 'queued', i.kind = 'refresh', i.created_at, i.id

-- name: fenced_import
SELECT i.id, i.owner_id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state,
       i.phase, i.polls, i.created_at, i.started_at, i.finished_at, i.default_import_attempts
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id = %(id)s AND i.claimed_by = %(claimer)s AND i.claim_epoch = %(epoch)s
  AND i.phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_reuse_sent
UPDATE imports
SET phase = %(to)s, state = %(state)s, started_at = COALESCE(started_at, %(now)s), not_before = NULL
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_import_sent
UPDATE imports
SET phase = %(to)s, state = %(state)s, started_at = COALESCE(started_at, %(now)s),
    default_import_attempts = default_import_attempts + 1, not_before = NULL
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_session
UPDATE imports SET session_ref = %(session_ref)s, phase = %(to)s, not_before = NULL
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_command
-- With the ownerExternalId the Default Import's reply echoed (kept per import). Also from the
-- Default Import's sender after its claim lapsed (:ordinal: which Default Import it sent, NULL
-- when it sent none), while nobody moved the import on: still starting, no command id, no later
-- Default Import recorded. The check is on the row itself, so a concurrent one is seen.
UPDATE imports SET command_id = %(command_id)s, phase = %(to)s, not_before = %(not_before)s,
    kontomatik_owner_id = COALESCE(%(owner_echo)s, kontomatik_owner_id)
WHERE id = %(id)s AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))
  AND ((claimed_by = %(claimer)s AND claim_epoch = %(epoch)s)
       OR (command_id IS NULL AND default_import_attempts = %(ordinal)s::integer))

-- name: access_ordinal
-- Which Default Import of its import a ledger row is (1 for the first; 0 when the row is not
-- one of them): the import's count of them is its default_import_attempts, moved in the same
-- transaction as each ledger row.
SELECT count(*) AS n FROM accesses
WHERE import_id = %(id)s AND kind = 'default_import' AND id <= %(access)s::bigint
  AND EXISTS (SELECT 1 FROM accesses AS own
              WHERE own.id = %(access)s::bigint AND own.import_id = %(id)s
                AND own.kind = 'default_import')

-- name: step_poll
UPDATE imports SET polls = polls + 1, last_poll_at = %(now)s, not_before = %(not_before)s
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_wait
UPDATE imports
SET not_before = %(not_before)s, attempts = COALESCE(%(attempts)s, attempts), phase = %(to)s
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: step_requeue
UPDATE imports
SET not_before = %(not_before)s, attempts = COALESCE(%(attempts)s, attempts), phase = %(to)s,
    state = %(state)s, claimed_by = NULL
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s
  AND phase IN (SELECT jsonb_array_elements_text(%(from)s::jsonb))

-- name: let_go
-- The claimer stops driving an import it still holds (a step failed, a graceful stop): a later
-- claim adopts it; an in-flight one keeps its slot.
UPDATE imports SET claimed_by = NULL, not_before = COALESCE(%(not_before)s, not_before)
WHERE id = %(id)s AND claimed_by = %(claimer)s AND claim_epoch = %(epoch)s AND phase <> 'done'

-- name: let_go_all
UPDATE imports SET claimed_by = NULL
WHERE phase <> 'done' AND claimed_by = %(claimer)s
RETURNING id, phase

-- name: insert_refresh_once
-- The partial unique index imports_one_open_refresh drops a second open refresh of a token.
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
VALUES (%(id)s, %(owner_id)s, %(token_id)s, NULL, NULL, 'refresh', 'queued', 'queued', %(since)s, %(now)s)
ON CONFLICT DO NOTHING

-- name: next_event_ids
-- MAX(id) (the primary key's end) keeps it right after rows written by bulk SQL outside aisd.
UPDATE counters
SET value = GREATEST(value, (SELECT COALESCE(MAX(id), 0) FROM events)) + %(n)s
WHERE name = 'event_id' RETURNING value

-- name: insert_event_with_id
INSERT INTO events (id, at, type, owner_external_id, token_id, import_id, data)
VALUES (%(id)s, %(at)s, %(type)s, %(owner_external_id)s, %(token_id)s, %(import_id)s, %(data)s)

-- name: insert_consent_once
INSERT INTO consents (owner_id, session_id, target, refresh_until, max_imports, created_at)
VALUES (%(owner_id)s, %(session_id)s, %(target)s, %(refresh_until)s, %(max_imports)s, %(now)s)
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
-- The tick's queued refreshes in one statement: refreshes is a JSON array of {id, token_id,
-- since}; each token's owner comes from the join. The partial unique index
-- imports_one_open_refresh drops a second open refresh of a token; only rows inserted are
-- returned.
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
SELECT r.id, t.owner_id, t.id, NULL, NULL, 'refresh', 'queued', 'queued', r.since, %(now)s
FROM jsonb_to_recordset(%(refreshes)s::jsonb) AS r(id text, token_id text, since text)
JOIN tokens AS t ON t.id = r.token_id
ON CONFLICT DO NOTHING
RETURNING id, token_id

-- name: clear_next_refresh_of_tokens
UPDATE tokens SET next_refresh_at = NULL
WHERE id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb))

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
WHERE c.session_id IN (SELECT jsonb_array_elements_text(%(session_ids)s::jsonb))

-- name: insert_owners_missing
-- An intake batch's owners not stored yet, one statement for the batch: %(rows)s is a JSON
-- array of {external_id, now}.
INSERT INTO owners (external_id, created_at)
SELECT r.external_id, r.now
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(external_id text, now text)
ON CONFLICT (external_id) DO NOTHING

-- name: owner_ids
SELECT external_id, id FROM owners
WHERE external_id IN (SELECT jsonb_array_elements_text(%(external_ids)s::jsonb))

-- name: insert_consents_new
-- No ON CONFLICT: a consent already stored under the sessionId fails the batch's fast path,
-- and its consents are then written one at a time (see _intake._write_batch). Rows go in in
-- the array's order (the function scan's), so that ids follow it.
INSERT INTO consents (owner_id, session_id, target, refresh_until, max_imports, created_at)
SELECT r.owner_id, r.session_id, r.target, r.refresh_until, r.max_imports, r.now
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(owner_id bigint, session_id text, target text, refresh_until text, max_imports integer,
          now text)
RETURNING session_id, id

-- name: upsert_sessions
INSERT INTO sessions (owner_id, session_id, signature, created_at)
SELECT r.owner_id, r.session_id, r.signature, r.now
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(owner_id bigint, session_id text, signature text, now text)
ON CONFLICT (session_id) DO UPDATE SET signature = excluded.signature
RETURNING session_id, id

-- name: insert_tokens
INSERT INTO tokens (id, owner_id, consent_id, multiple_access_id, state, created_at, expires_at,
                    state_changed_at, refresh_until, max_imports, next_refresh_at,
                    next_warning_at)
SELECT r.id, r.owner_id, r.consent_id, r.multiple_access_id, 'active', r.now, r.expires_at,
       r.now, r.refresh_until, r.max_imports, r.now, r.now
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(id text, owner_id bigint, consent_id bigint, multiple_access_id text, now text,
          expires_at text, refresh_until text, max_imports integer)

-- name: insert_imports
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
SELECT r.id, r.owner_id, r.token_id, r.consent_id, r.session_ref, r.kind, 'queued', 'queued',
       r.since, r.now
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(id text, owner_id bigint, token_id text, consent_id bigint, session_ref bigint,
          kind text, since text, now text)
