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




-- name: consent_by_session
SELECT c.id AS consent_id, i.id AS import_id, t.id AS token_id,
       o.external_id AS owner_external_id, s.signature AS session_signature,
       t.multiple_access_id
FROM consents AS c
JOIN owners AS o ON o.id = c.owner_id
JOIN imports AS i ON i.consent_id = c.id AND i.kind = 'initial'
LEFT JOIN tokens AS t ON t.consent_id = c.id
LEFT JOIN sessions AS s ON s.session_id = c.session_id
WHERE c.session_id = %(session_id)s

-- name: upsert_owner
-- DO UPDATE (a no-op) rather than DO NOTHING so that RETURNING yields the existing row's id.
INSERT INTO owners (external_id, created_at) VALUES (%(external_id)s, %(now)s)
ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id
RETURNING id

-- name: upsert_session
INSERT INTO sessions (owner_id, session_id, signature, created_at)
VALUES (%(owner_id)s, %(session_id)s, %(signature)s, %(now)s)
ON CONFLICT (session_id) DO UPDATE SET signature = excluded.signature
RETURNING id

-- name: insert_token
-- Due at once (the first tick plans it) and its warnings evaluated at the first tick.
INSERT INTO tokens (id, owner_id, consent_id, multiple_access_id, state, created_at, expires_at,
                    state_changed_at, refresh_until, max_imports, next_refresh_at,
                    next_warning_at)
VALUES (%(id)s, %(owner_id)s, %(consent_id)s, %(multiple_access_id)s, 'active', %(now)s, %(expires_at)s, %(now)s,
        %(refresh_until)s, %(max_imports)s, %(now)s, %(now)s)

-- name: insert_import
INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     created_at)
VALUES (%(id)s, %(owner_id)s, %(token_id)s, %(consent_id)s, %(session_ref)s, %(kind)s, 'queued', 'queued', %(since)s,
        %(now)s)

-- name: token_owner
SELECT t.owner_id, t.state FROM tokens AS t WHERE t.id = %(token_id)s

-- name: queued_jobs
-- Initial imports first (a person waits), then the oldest.
SELECT i.id, i.kind, i.phase, o.external_id AS owner_external_id, i.token_id, i.since,
       i.created_at, s.session_id, s.signature, i.command_id, i.polls,
       i.default_import_attempts, i.attempts, i.not_before, i.started_at, i.last_poll_at,
       CASE WHEN i.kind = 'refresh' AND i.session_ref IS NULL
            THEN t.multiple_access_id END AS multiple_access_id
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
LEFT JOIN sessions AS s ON s.id = i.session_ref
LEFT JOIN tokens AS t ON t.id = i.token_id
-- The `phase <> 'done'` term lets SQLite use the partial index imports_open.
WHERE i.phase <> 'done' AND i.phase = 'queued'
  AND (i.not_before IS NULL OR i.not_before <= %(now)s)
ORDER BY i.kind = 'refresh', i.created_at, i.id
LIMIT %(limit)s

-- name: in_flight_jobs
SELECT i.id, i.kind, i.phase, o.external_id AS owner_external_id, i.token_id, i.since,
       i.created_at, s.session_id, s.signature, i.command_id, i.polls,
       i.default_import_attempts, i.attempts, i.not_before, i.started_at, i.last_poll_at,
       CASE WHEN i.kind = 'refresh' AND i.session_ref IS NULL
            THEN t.multiple_access_id END AS multiple_access_id
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
LEFT JOIN sessions AS s ON s.id = i.session_ref
LEFT JOIN tokens AS t ON t.id = i.token_id
WHERE i.phase <> 'done' AND i.phase IN ('reusing', 'ready', 'starting', 'polling')
ORDER BY i.created_at, i.id

-- name: insert_access
INSERT INTO accesses (kind, token_id, import_id, session_id, sent_at)
VALUES (%(kind)s, %(token_id)s, %(import_id)s, %(session_id)s, %(now)s)
RETURNING id

-- name: set_access_outcome
UPDATE accesses SET outcome = %(outcome)s, error_name = %(error_name)s WHERE id = %(id)s

-- name: import_row
SELECT i.id, i.owner_id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state,
       i.phase, i.polls, i.created_at, i.started_at, i.finished_at, i.default_import_attempts
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id = %(id)s

-- name: finish_import_success
UPDATE imports
SET state = %(state)s, phase = %(to)s, finished_at = %(now)s, not_before = NULL, polls = %(polls)s,
    accounts = %(accounts)s, transactions = %(transactions)s, added = %(added)s, modified = %(modified)s,
    removed = %(removed)s
WHERE id = %(id)s

-- name: finish_import_failure
UPDATE imports
SET state = %(state)s, phase = %(to)s, finished_at = %(now)s, not_before = NULL,
    polls = COALESCE(%(polls)s, polls), error_name = %(error_name)s, error_message = %(error_message)s
WHERE id = %(id)s

-- name: end_token
-- Only from 'active': every other state is final. The secret goes with the state.
UPDATE tokens
SET state = %(state)s, state_reason = %(reason)s, state_changed_at = %(now)s, next_refresh_at = NULL,
    next_warning_at = NULL, multiple_access_id = NULL
WHERE id = %(id)s AND state = 'active'

-- name: token_refresh_failed
UPDATE tokens
SET failures = failures + 1,
    next_refresh_at = CASE WHEN state = 'active' THEN %(now)s END
WHERE id = %(id)s

-- name: token_quota_refused
UPDATE tokens
SET quota_refused_at = %(now)s, upstream_deferred_until = %(deferred_until)s,
    next_refresh_at = CASE WHEN state = 'active' THEN %(now)s END
WHERE id = %(id)s

-- name: token_reused
UPDATE tokens SET last_refresh_at = GREATEST(COALESCE(last_refresh_at, %(now)s), %(now)s)
WHERE id = %(id)s

-- name: token_reuse_not_sent
-- A Reuse that provably never left: the token's last refresh is the newest one that may have.
UPDATE tokens
SET last_refresh_at = (
    SELECT MAX(a.sent_at) FROM accesses AS a
    WHERE a.token_id = tokens.id AND a.kind = 'reuse'
      AND (a.outcome IS NULL OR a.outcome <> 'not_sent')
)
WHERE id = (SELECT token_id FROM accesses WHERE id = %(id)s AND kind = 'reuse')

-- name: last_event_id
SELECT COALESCE(MAX(id), 0) FROM events

-- name: set_owner_persons
UPDATE owners SET persons = %(persons)s, persons_at = %(now)s WHERE id = %(id)s

-- name: stored_transactions
SELECT id, transaction_on, booked_on, amount, balance, title, party, party_iban, kind, status,
       labels, extra
FROM transactions WHERE account_id = %s AND transaction_on >= %s ORDER BY id

-- name: insert_transaction
INSERT INTO transactions (account_id, transaction_on, booked_on, amount, balance, title, party,
                          party_iban, kind, status, labels, extra, first_import_id,
                          last_import_id, change_seq)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: log_changes
-- The merge of one account took the change sequence values (:start, :end]: inserts first (up to
-- :added_upto), then updates. One range scan of transactions_change_seq logs them all.
INSERT INTO transaction_changes (change_seq, transaction_id, account_id, kind)
SELECT change_seq, id, account_id,
       CASE WHEN change_seq <= %(added_upto)s THEN 'added' ELSE 'modified' END
FROM transactions
WHERE change_seq > %(start)s AND change_seq <= %(end)s

-- name: update_transaction
UPDATE transactions
SET transaction_on = %s, booked_on = %s, amount = %s, balance = %s, title = %s, party = %s,
    party_iban = %s, kind = %s, status = %s, labels = %s, extra = %s, last_import_id = %s,
    change_seq = %s
WHERE id = %s

-- name: insert_tombstone
INSERT INTO transaction_tombstones (change_seq, transaction_id, account_id, import_id, removed_at)
VALUES (%s, %s, %s, %s, %s)

-- name: delete_transaction
DELETE FROM transactions WHERE id = %s

-- name: get_counter
-- Locked until commit: the merge and erasure take the next change sequence values from it, and
-- concurrent writers must take them one after the other, in commit order.
SELECT value FROM counters WHERE name = %(name)s FOR UPDATE

-- name: set_counter
INSERT INTO counters (name, value) VALUES (%(name)s, %(value)s)
ON CONFLICT (name) DO UPDATE SET value = excluded.value

-- name: insert_raw_reply
INSERT INTO raw_replies (import_id, coverage_start, reply, created_at)
VALUES (%(import_id)s, %(coverage_start)s, %(reply)s, %(now)s)
ON CONFLICT (import_id) DO UPDATE SET
    coverage_start = excluded.coverage_start, reply = excluded.reply,
    created_at = excluded.created_at

-- name: token_imported
-- Any success resets the failure streak and the upstream deferral; an active token is re-planned
-- at the next tick.
UPDATE tokens
SET last_import_at = %(now)s, imports_done = imports_done + 1, failures = 0,
    upstream_deferred_until = NULL,
    next_refresh_at = CASE WHEN state = 'active' THEN %(now)s END
WHERE id = %(id)s

-- name: insert_token_account
INSERT INTO token_accounts (token_id, iban, first_seen_at) VALUES (%(token_id)s, %(iban)s, %(now)s)
ON CONFLICT (token_id, iban) DO NOTHING

-- name: import_record
-- With the echo recorded for the import, and the newest one of an earlier successful import of
-- the same token (what Kontomatik knows that token's owner as).
SELECT i.id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state, i.command_id,
       i.created_at, i.started_at, i.finished_at, i.polls, i.accounts, i.transactions,
       i.error_name, i.error_message, i.since, i.kontomatik_owner_id AS owner_echo,
       (SELECT p.kontomatik_owner_id FROM imports AS p
        WHERE p.token_id = i.token_id AND p.phase = 'done' AND p.id <> i.id
          AND p.state = 'successful'
          AND p.kontomatik_owner_id IS NOT NULL
        ORDER BY p.created_at DESC LIMIT 1) AS token_echo
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id = %(id)s

-- name: list_import_records
-- One statement per filter with an index to stop early on, as SQLite's.
SELECT i.id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state, i.command_id,
       i.created_at, i.started_at, i.finished_at, i.polls, i.accounts, i.transactions,
       i.error_name, i.error_message, i.since, i.kontomatik_owner_id AS owner_echo,
       NULL AS token_echo
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE %(kind)s::text IS NULL OR i.kind = %(kind)s
ORDER BY i.created_at DESC, i.id DESC
LIMIT %(limit)s

-- name: list_import_records_in_state
SELECT i.id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state, i.command_id,
       i.created_at, i.started_at, i.finished_at, i.polls, i.accounts, i.transactions,
       i.error_name, i.error_message, i.since, i.kontomatik_owner_id AS owner_echo,
       NULL AS token_echo
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.state = %(state)s
  AND (%(kind)s::text IS NULL OR i.kind = %(kind)s)
ORDER BY i.created_at DESC, i.id DESC
LIMIT %(limit)s

-- name: list_import_records_of_token
SELECT i.id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state, i.command_id,
       i.created_at, i.started_at, i.finished_at, i.polls, i.accounts, i.transactions,
       i.error_name, i.error_message, i.since, i.kontomatik_owner_id AS owner_echo,
       NULL AS token_echo
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id IN (
    SELECT id FROM imports WHERE token_id = %(token_id)s AND phase = 'done'
    UNION ALL
    SELECT id FROM imports WHERE token_id = %(token_id)s AND phase <> 'done'
)
  AND (%(owner_external_id)s::text IS NULL OR o.external_id = %(owner_external_id)s)
  AND (%(state)s::text IS NULL OR i.state = %(state)s)
  AND (%(kind)s::text IS NULL OR i.kind = %(kind)s)
ORDER BY i.created_at DESC, i.id DESC
LIMIT %(limit)s

-- name: list_import_records_of_owner
SELECT i.id, o.external_id AS owner_external_id, i.token_id, i.kind, i.state, i.command_id,
       i.created_at, i.started_at, i.finished_at, i.polls, i.accounts, i.transactions,
       i.error_name, i.error_message, i.since, i.kontomatik_owner_id AS owner_echo,
       NULL AS token_echo
FROM imports AS i
LEFT JOIN owners AS o ON o.id = i.owner_id
WHERE i.id IN (
    SELECT id FROM imports
    WHERE owner_id = (SELECT id FROM owners WHERE external_id = %(owner_external_id)s)
      AND phase = 'done'
    UNION ALL
    SELECT id FROM imports
    WHERE owner_id = (SELECT id FROM owners WHERE external_id = %(owner_external_id)s)
      AND phase <> 'done'
)
  AND (%(state)s::text IS NULL OR i.state = %(state)s)
  AND (%(kind)s::text IS NULL OR i.kind = %(kind)s)
ORDER BY i.created_at DESC, i.id DESC
LIMIT %(limit)s

-- name: owner_has_consent
SELECT EXISTS (
    SELECT 1 FROM consents AS c JOIN owners AS o ON o.id = c.owner_id
    WHERE o.external_id = %(external_id)s
)

-- name: owner_persons
SELECT persons FROM owners WHERE external_id = %(external_id)s

-- name: owner_accounts
SELECT a.iban, a.name, a.currency_name, a.balance, a.funds_available, a.updated_at
FROM accounts AS a JOIN owners AS o ON o.id = a.owner_id
WHERE o.external_id = %(external_id)s AND a.kind = 'account'
ORDER BY a.iban

-- name: account_view
-- Newest first, as Kontomatik sends them; within a day, the order they arrived in.
SELECT t.id, a.iban, t.transaction_on, t.booked_on, t.amount, t.balance, t.title, t.party,
       t.party_iban, t.kind, t.status, t.labels, a.currency_name
FROM transactions AS t
JOIN accounts AS a ON a.id = t.account_id
JOIN owners AS o ON o.id = a.owner_id
WHERE o.external_id = %(external_id)s AND a.kind = 'account' AND a.iban = %(iban)s
ORDER BY t.transaction_on DESC, t.id

-- name: list_events
SELECT id, at, type, owner_external_id, token_id, import_id, data, origin
FROM events WHERE id > %(after)s ORDER BY id LIMIT %(limit)s

-- name: count_tokens
-- Kept by triggers (0006): a few rows, however many tokens and imports there are.
SELECT state, n FROM state_counts WHERE kind = 'tokens'

-- name: count_imports
SELECT state, n FROM state_counts WHERE kind = 'imports'

-- name: token_secret
SELECT multiple_access_id FROM tokens WHERE id = %(id)s

-- name: list_raw_replies
-- A raw reply is stored as its import ends: on the owner's index of ended imports.
SELECT r.import_id, r.coverage_start, r.reply
FROM raw_replies AS r JOIN imports AS i ON i.id = r.import_id
WHERE i.phase = 'done' AND i.owner_id = (SELECT id FROM owners WHERE external_id = %(external_id)s)
ORDER BY i.finished_at, r.created_at, r.import_id

-- name: replay_owner_after
-- Owners in external id order, each asked for a raw reply through its ended imports (a raw reply is
-- stored as its import ends), so the walk stops at the first owner with one.
SELECT o.external_id
FROM owners AS o
WHERE o.external_id > %(after)s
  AND EXISTS (SELECT 1 FROM imports AS i JOIN raw_replies AS r ON r.import_id = i.id
              WHERE i.owner_id = o.id AND i.phase = 'done')
ORDER BY o.external_id
LIMIT 1

-- name: purge_raw_replies
DELETE FROM raw_replies
WHERE import_id IN (SELECT id FROM imports WHERE finished_at < %(older_than)s)

-- name: list_token_records
SELECT * FROM token_records
WHERE (%(owner_external_id)s::text IS NULL OR owner_external_id = %(owner_external_id)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
ORDER BY created_at, row_order

-- name: token_records_by_ids
-- By primary key: the quota gate asks for one token before every Reuse.
SELECT * FROM token_records
WHERE token_id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb))
  AND (%(owner_external_id)s::text IS NULL OR owner_external_id = %(owner_external_id)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
ORDER BY created_at, row_order

-- name: due_token_records
-- A range scan of tokens_due in its own order: the cost grows with the tokens due.
SELECT * FROM token_records AS r
WHERE r.state = 'active' AND r.next_refresh_at <= %(now)s
  AND NOT EXISTS (
      SELECT 1 FROM imports AS i
      WHERE i.token_id = r.token_id AND i.kind = 'refresh' AND i.state IN ('queued', 'running')
  )
ORDER BY r.next_refresh_at, r.row_order
LIMIT %(limit)s

-- name: next_refresh_due
SELECT next_refresh_at FROM tokens
WHERE state = 'active' AND next_refresh_at IS NOT NULL
ORDER BY next_refresh_at
LIMIT 1

-- name: reuse_ledger
-- The asked tokens and every token sharing a bank account with one of them: their Reuse accesses
-- since the horizon ('access' rows) and their accounts ('account' rows, a NULL iban for a token
-- with none). One statement, so both halves come from the same snapshot.
WITH asked(token_id) AS (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb)),
related(token_id) AS (
    SELECT token_id FROM asked
    UNION
    SELECT other.token_id
    FROM asked
    JOIN token_accounts AS mine ON mine.token_id = asked.token_id
    JOIN token_accounts AS other ON other.iban = mine.iban
)
SELECT 'access' AS what, a.token_id, a.sent_at AS value
FROM related AS r
JOIN accesses AS a ON a.token_id = r.token_id
WHERE a.kind = 'reuse' AND a.sent_at >= %(since)s
  AND (a.outcome IS NULL OR a.outcome <> 'not_sent')
UNION ALL
SELECT 'account', r.token_id, ta.iban
FROM related AS r
LEFT JOIN token_accounts AS ta ON ta.token_id = r.token_id

-- name: reuse_ledger_of_accounts
-- The planner tick's ledger: the Reuse accesses counting against the asked accounts (IBANs and
-- pseudo-accounts) since the horizon, a row per access and account it counts against: one
-- range of reuse_by_account (0006) an account.
SELECT r.access_id, r.token_id, r.account, r.sent_at
FROM reuse_by_account AS r
WHERE r.account IN (SELECT jsonb_array_elements_text(%(accounts)s::jsonb))
  AND r.sent_at >= %(since)s

-- name: set_plan
UPDATE tokens SET next_refresh_at = %(at)s, plan_reason = %(reason)s
WHERE id = %(id)s AND state = 'active'

-- name: clear_next_refresh
UPDATE tokens SET next_refresh_at = NULL WHERE id = %(id)s

-- name: tokens_past_expiry
SELECT t.id, o.external_id AS owner_external_id, t.expires_at
FROM tokens AS t
LEFT JOIN owners AS o ON o.id = t.owner_id
WHERE t.state = 'active' AND t.expires_at <= %(now)s
ORDER BY t.expires_at, t.row_order

-- name: queued_refreshes_of_token
SELECT id, polls FROM imports
-- On the partial index imports_one_open_refresh (a queued refresh is open).
WHERE token_id = %(token_id)s AND kind = 'refresh' AND phase <> 'done' AND phase = 'queued'
ORDER BY created_at, id

-- name: warning_candidates
-- A range scan of tokens_warning: tokens whose next threshold has passed.
SELECT * FROM token_records
WHERE state = 'active' AND next_warning_at <= %(now)s
ORDER BY next_warning_at, row_order

-- name: set_next_warning
UPDATE tokens SET next_warning_at = %(next_warning_at)s WHERE id = %(id)s

-- name: insert_token_warning
INSERT INTO token_warnings (token_id, day, raised_at) VALUES (%(token_id)s, %(day)s, %(now)s)
ON CONFLICT (token_id, day) DO NOTHING

-- name: token_brief
SELECT t.state, o.external_id AS owner_external_id, t.expires_at
FROM tokens AS t
LEFT JOIN owners AS o ON o.id = t.owner_id
WHERE t.id = %(id)s

-- name: recent_activity
-- For daemon.status, both bounded index walks: the newest successful import (imports_finished,
-- backwards, stopping at the first success), and the imports that failed in the last hour
-- (imports_state: failed imports created in the last :window, few even with many tokens).
SELECT (SELECT finished_at FROM imports
        WHERE finished_at >= %(horizon)s AND state = 'successful'
        ORDER BY finished_at DESC LIMIT 1) AS last_success,
       (SELECT COUNT(*) FROM imports
        WHERE state = 'failed' AND created_at >= %(window)s AND finished_at >= %(hour_ago)s)
           AS failed_last_hour

-- name: savepoint_batch
SAVEPOINT batch

-- name: rollback_to_batch
ROLLBACK TO batch

-- name: release_batch
RELEASE batch

-- name: savepoint_each
-- One write of a group commit (see the SQLite store's _sync.group_transaction).
SAVEPOINT each

-- name: rollback_to_each
ROLLBACK TO each

-- name: release_each
RELEASE each
