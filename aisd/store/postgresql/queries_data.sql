-- The PostgreSQL backend's statements: the change feed, billing inputs, erasure, retention, analytics. The same names as the SQLite
-- backend's, so the backend-neutral step code runs on either; %(name)s and %s parameters.

-- name: feed_head
SELECT COALESCE((SELECT value FROM counters WHERE name = 'change_seq'), 0)

-- name: feed_owner_id
SELECT id FROM owners WHERE external_id = %(external_id)s

-- name: feed_entries
-- Each arm is cut at :limit first: the first :limit of the union lie within them, and each arm
-- is then a short range scan of its primary key.
SELECT seq, transaction_id, kind FROM (
    SELECT * FROM (
        SELECT change_seq AS seq, transaction_id, kind FROM transaction_changes
        WHERE change_seq > %(after)s ORDER BY change_seq LIMIT %(limit)s
    ) AS arm1
    UNION ALL
    SELECT * FROM (
        SELECT change_seq AS seq, transaction_id, 'removed' AS kind FROM transaction_tombstones
        WHERE change_seq > %(after)s ORDER BY change_seq LIMIT %(limit)s
    ) AS arm2
) AS entries
ORDER BY seq LIMIT %(limit)s

-- name: feed_entries_of_owner
SELECT seq, transaction_id, kind FROM (
    SELECT * FROM (
        SELECT c.change_seq AS seq, c.transaction_id, c.kind FROM transaction_changes AS c
        WHERE c.change_seq > %(after)s
          AND c.account_id IN (SELECT id FROM accounts WHERE owner_id = %(owner_id)s)
        ORDER BY c.change_seq LIMIT %(limit)s
    ) AS arm1
    UNION ALL
    SELECT * FROM (
        SELECT r.change_seq AS seq, r.transaction_id, 'removed' AS kind
        FROM transaction_tombstones AS r
        WHERE r.change_seq > %(after)s
          AND r.account_id IN (SELECT id FROM accounts WHERE owner_id = %(owner_id)s)
        ORDER BY r.change_seq LIMIT %(limit)s
    ) AS arm2
) AS entries
ORDER BY seq LIMIT %(limit)s

-- name: feed_rows
SELECT t.id, COALESCE(a.iban, a.key) AS iban, t.transaction_on, t.booked_on, t.amount,
       t.balance, t.title, t.party, t.party_iban, t.kind, t.status, t.labels,
       COALESCE(a.currency_name, '') AS currency_name, o.external_id AS owner_external_id,
       a.kind AS source, a.card_id, a.number, a.iban AS own_iban
FROM transactions AS t
JOIN accounts AS a ON a.id = t.account_id
JOIN owners AS o ON o.id = a.owner_id
WHERE t.id IN (SELECT jsonb_array_elements_text(%(ids)s::jsonb)::bigint)

-- name: billing_tokens
-- Tokens whose life may have a cycle ending in [:start, :end); NULL bounds are open. ended_at
-- comes from the token_records view, the one definition of when a token left 'active'.
SELECT token_id, owner_external_id, created_at, expires_at, ended_at
FROM token_records
WHERE (%(end)s::text IS NULL OR created_at < %(end)s)
  AND (%(start)s::text IS NULL OR LEAST(expires_at, COALESCE(ended_at, expires_at)) >= %(start)s)
ORDER BY token_id

-- name: billing_imports
-- Successful imports of those tokens, and the anonymous ones kept when an owner was forgotten.
SELECT i.token_id, i.finished_at, i.kind
FROM imports AS i
WHERE i.state = 'successful' AND i.finished_at IS NOT NULL
  AND i.token_id IN (
      SELECT token_id FROM token_records
      WHERE (%(end)s::text IS NULL OR created_at < %(end)s)
        AND (%(start)s::text IS NULL OR LEAST(expires_at, COALESCE(ended_at, expires_at)) >= %(start)s)
  )
UNION ALL
SELECT b.token_id, b.finished_at, b.kind
FROM billing_imports AS b
WHERE b.token_id IN (
    SELECT token_id FROM token_records
    WHERE (%(end)s::text IS NULL OR created_at < %(end)s)
      AND (%(start)s::text IS NULL OR LEAST(expires_at, COALESCE(ended_at, expires_at)) >= %(start)s)
)

-- name: forget_owner_id
SELECT id FROM owners WHERE external_id = %(external_id)s

-- name: forget_token_ids
SELECT id FROM tokens WHERE owner_id = %(owner_id)s ORDER BY id

-- name: forget_import_ids
-- Ended imports on the owner and token indexes (of ended imports), open ones on the partial
-- index of open imports (none once forget_blockers passed, but asked all the same). The tokens
-- as an array: an IN over the set-returning function gets a hash join over every ended import.
SELECT id FROM imports
WHERE phase = 'done' AND owner_id = %(owner_id)s
UNION
SELECT id FROM imports
WHERE phase = 'done'
  AND token_id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(token_ids)s::jsonb)))
UNION
SELECT id FROM imports
WHERE phase <> 'done'
  AND (owner_id = %(owner_id)s
       OR token_id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb)))
ORDER BY id

-- name: forget_keep_billing
INSERT INTO billing_imports (token_id, kind, finished_at)
SELECT token_id, kind, finished_at FROM imports
WHERE id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))
  AND state = 'successful' AND token_id IS NOT NULL AND finished_at IS NOT NULL

-- name: forget_tombstones
-- Anonymous removals (no account, no import) so that feed consumers delete the rows too.
INSERT INTO transaction_tombstones (change_seq, transaction_id, account_id, import_id,
                                    removed_at)
SELECT %(seq)s + ROW_NUMBER() OVER (ORDER BY t.id), t.id, NULL, NULL, %(now)s
FROM transactions AS t
WHERE t.account_id IN (SELECT id FROM accounts WHERE owner_id = %(owner_id)s)

-- name: forget_accesses
-- The ledger rows stay (quota and audit) without the session they ran on.
UPDATE accesses SET session_id = NULL
WHERE session_id IS NOT NULL
  AND (import_id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))
       OR token_id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb)))

-- name: forget_events
SELECT id, data FROM events
WHERE owner_external_id = %(external_id)s
   OR token_id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb))
   OR import_id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))
ORDER BY id

-- name: forget_event_update
UPDATE events SET owner_external_id = NULL, data = %s WHERE id = %s

-- name: forget_delete_changes
DELETE FROM transaction_changes
WHERE account_id IN (SELECT id FROM accounts WHERE owner_id = %(owner_id)s)

-- name: forget_delete_transactions
DELETE FROM transactions
WHERE account_id IN (SELECT id FROM accounts WHERE owner_id = %(owner_id)s)

-- name: forget_delete_raw_replies
DELETE FROM raw_replies WHERE import_id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))

-- name: forget_delete_refused_replies
DELETE FROM refused_replies
WHERE import_id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))

-- name: forget_delete_imports
DELETE FROM imports WHERE id IN (SELECT jsonb_array_elements_text(%(import_ids)s::jsonb))

-- name: forget_delete_token_accounts
DELETE FROM token_accounts WHERE token_id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb))

-- name: forget_anonymise_tokens
-- The billing facts stay (id, times, state); the secret, the owner and the consent go.
UPDATE tokens SET owner_id = NULL, consent_id = NULL, multiple_access_id = NULL
WHERE id IN (SELECT jsonb_array_elements_text(%(token_ids)s::jsonb))

-- name: forget_delete_accounts
DELETE FROM accounts WHERE owner_id = %(owner_id)s

-- name: forget_delete_sessions
DELETE FROM sessions WHERE owner_id = %(owner_id)s

-- name: forget_delete_consents
DELETE FROM consents WHERE owner_id = %(owner_id)s

-- name: forget_delete_owner
DELETE FROM owners WHERE id = %(owner_id)s

-- name: secure_delete_on
-- SQLite zeroes freed pages with it; PostgreSQL has no such switch (VACUUM below frees them).
SELECT 1

-- name: wal_checkpoint_truncate
-- Nothing to report busy: what the WAL, replicas and backups keep is out of aisd's reach
-- (README, "Two hosts").
SELECT 0 AS busy

-- name: vacuum
-- The tables an erasure deletes from: their dead rows are removed from the pages now instead
-- of whenever autovacuum comes by.
VACUUM (ANALYZE) transactions, transaction_changes, transaction_tombstones, raw_replies,
    refused_replies, imports,
    accounts, sessions, consents, owners, token_accounts, events, accesses, owner_scores

-- name: purge_transaction_changes
DELETE FROM transaction_changes
WHERE transaction_id IN (SELECT id FROM transactions WHERE transaction_on < %(before)s)

-- name: purge_transactions
DELETE FROM transactions WHERE transaction_on < %(before)s

-- name: forget_blockers
-- What must end before an owner can be forgotten: an active token (not revoked upstream) or an
-- import the pipeline is still driving.
SELECT (SELECT COUNT(*) FROM tokens WHERE owner_id = %(owner_id)s AND state = 'active')
           AS active_tokens,
       -- Queued or running is open (not 'done'): a walk of the few open imports.
       (SELECT COUNT(*) FROM imports
        WHERE phase <> 'done' AND owner_id = %(owner_id)s AND state IN ('queued', 'running'))
           AS open_imports

-- name: upsert_owner_score
INSERT INTO owner_scores
    (owner_id, model_id, retrained_at, score, percentile, tier, import_id, fetched_at)
SELECT o.id, %(model_id)s, %(retrained_at)s, %(score)s, %(percentile)s, %(tier)s, %(import_id)s, %(now)s
FROM owners AS o WHERE o.external_id = %(external_id)s
ON CONFLICT (owner_id, model_id) DO UPDATE SET
    retrained_at = excluded.retrained_at,
    score = excluded.score,
    percentile = excluded.percentile,
    tier = excluded.tier,
    import_id = excluded.import_id,
    fetched_at = excluded.fetched_at

-- name: owner_scores
SELECT s.model_id, s.retrained_at, s.score, s.percentile, s.tier, s.fetched_at
FROM owner_scores AS s JOIN owners AS o ON o.id = s.owner_id
WHERE o.external_id = %(external_id)s
ORDER BY s.model_id

-- name: upsert_container
-- An account (kind 'account', key its IBAN) or a credit card (kind 'card', key its cardId, else
-- its masked number), with the latest details its import gave.
INSERT INTO accounts (owner_id, kind, key, iban, name, friendly_name, currency_name, balance,
                      funds_available, active_since_at_least, direct_debit,
                      partial_due_to_timeout, updated_at, card_id, number, card_limit, interest,
                      due_date, card_owner, owners)
VALUES (%(owner_id)s, %(kind)s, %(key)s, %(iban)s, %(name)s, %(friendly_name)s, %(currency_name)s,
        %(balance)s, %(funds_available)s, %(active_since_at_least)s, %(direct_debit)s,
        %(partial_due_to_timeout)s, %(now)s, %(card_id)s, %(number)s, %(card_limit)s,
        %(interest)s, %(due_date)s, %(card_owner)s, %(owners)s)
ON CONFLICT (owner_id, kind, key) DO UPDATE SET
    iban = excluded.iban, name = excluded.name, friendly_name = excluded.friendly_name,
    currency_name = excluded.currency_name, balance = excluded.balance,
    funds_available = excluded.funds_available,
    active_since_at_least = excluded.active_since_at_least,
    direct_debit = excluded.direct_debit,
    partial_due_to_timeout = excluded.partial_due_to_timeout,
    updated_at = excluded.updated_at, card_id = excluded.card_id, number = excluded.number,
    card_limit = excluded.card_limit, interest = excluded.interest, due_date = excluded.due_date,
    card_owner = excluded.card_owner, owners = excluded.owners
RETURNING id

-- name: owner_cards
SELECT a.key, a.card_id, a.name, a.number, a.iban, a.currency_name, a.balance,
       a.funds_available, a.card_limit, a.interest, a.due_date, a.card_owner, a.owners,
       a.partial_due_to_timeout, a.updated_at
FROM accounts AS a JOIN owners AS o ON o.id = a.owner_id
WHERE o.external_id = %(external_id)s AND a.kind = 'card'
ORDER BY a.key

-- name: card_view
-- Newest first, as Kontomatik sends them; within a day, the order they arrived in.
SELECT t.id, a.key AS iban, t.transaction_on, t.booked_on, t.amount, t.balance, t.title,
       t.party, t.party_iban, t.kind, t.status, t.labels, COALESCE(a.currency_name, '')
           AS currency_name
FROM transactions AS t
JOIN accounts AS a ON a.id = t.account_id
JOIN owners AS o ON o.id = a.owner_id
WHERE o.external_id = %(external_id)s AND a.kind = 'card' AND a.key = %(key)s
ORDER BY t.transaction_on DESC, t.id

-- name: owner_account_owners
SELECT a.key, a.owners
FROM accounts AS a JOIN owners AS o ON o.id = a.owner_id
WHERE o.external_id = %(external_id)s AND a.kind = 'account'

-- name: set_import_echo
UPDATE imports SET kontomatik_owner_id = COALESCE(%(echo)s, kontomatik_owner_id) WHERE id = %(id)s

-- name: insert_refused_reply
INSERT INTO refused_replies (import_id, reason, reply, created_at)
VALUES (%(import_id)s, %(reason)s, %(reply)s, %(now)s)
ON CONFLICT (import_id) DO UPDATE SET
    reason = excluded.reason, reply = excluded.reply, created_at = excluded.created_at

-- name: refused_reply
SELECT reason, reply FROM refused_replies WHERE import_id = %(import_id)s

-- name: pause_token_refreshes
-- No refresh is planned until someone acts (token.refresh, or a new consent): the token stays
-- active, and its next successful import plans it again.
UPDATE tokens SET next_refresh_at = NULL, plan_reason = 'refresh_paused'
WHERE id = %(id)s AND state = 'active'

-- name: purge_refused_replies
DELETE FROM refused_replies
WHERE import_id IN (SELECT id FROM imports WHERE finished_at < %(older_than)s)
