-- What several daemons on one database need beyond the SQLite backend's statements: the locks
-- of the quota section and of intake, the leader lease, the cluster's status, notifications.
-- Advisory lock keys are (space, hashtext(...)); a hash collision only serialises more.

-- name: lock_sessions
-- One intake batch writing a sessionId at a time across hosts: the second finds the first's
-- consent. Locked in sorted order, so that two batches never deadlock.
SELECT count(pg_advisory_xact_lock(3, keys.k)) FROM (
    SELECT DISTINCT hashtext(s) AS k FROM unnest(%(session_ids)s::text[]) AS s ORDER BY 1
) AS keys

-- name: lock_quota_shared
-- Every quota section holds this shared; the planner tick takes it exclusively.
SELECT pg_advisory_xact_lock_shared(1, 0)

-- name: lock_quota_exclusive
SELECT pg_advisory_xact_lock(1, 0)

-- name: lock_quota_reach
-- The accounts the tokens reach (space 2) and the tokens themselves (space 4, for a token whose
-- accounts are not known yet), locked in sorted order so that two sections never deadlock.
SELECT count(pg_advisory_xact_lock(keys.space, keys.k)) FROM (
    SELECT 2 AS space, hashtext(iban) AS k
    FROM token_accounts WHERE token_id = ANY(%(token_ids)s::text[])
    UNION
    SELECT 4, hashtext(id) FROM unnest(%(token_ids)s::text[]) AS id
    ORDER BY 1, 2
) AS keys

-- name: take_leadership
-- The holder renews; anyone takes a lease that lapsed. The term changes with every lapse or
-- change of holder: it fences whatever a leader writes under it.
UPDATE leader
SET term = CASE WHEN holder = %(holder)s AND lease_until > clock_timestamp() THEN term
                ELSE term + 1 END,
    holder = %(holder)s,
    lease_until = clock_timestamp() + make_interval(secs => %(ttl)s)
WHERE id = 1 AND (holder = %(holder)s OR holder IS NULL OR lease_until <= clock_timestamp())
RETURNING term

-- name: resign_leadership
UPDATE leader SET lease_until = '-infinity' WHERE id = 1 AND holder = %(holder)s

-- name: cluster_daemons
-- The live and recently lapsed claimers (one per daemon start), their heartbeat's age on the
-- database clock and the slots their imports hold.
SELECT c.id, c.host, c.pid,
       EXTRACT(EPOCH FROM clock_timestamp() - c.heartbeat_at)::float8 AS heartbeat_age,
       c.lease_until > clock_timestamp() AS live,
       (SELECT COUNT(*) FROM slots AS s JOIN imports AS i ON i.id = s.import_id
        WHERE i.claimed_by = c.id) AS slots
FROM claimers AS c
ORDER BY c.started_at, c.id

-- name: cluster_leader
SELECT holder, term, lease_until > clock_timestamp() AS live FROM leader WHERE id = 1

-- name: notify_work
-- Delivered at commit, only if it commits: a hint to every daemon that work may be claimable
-- (a queued import, a freed slot). Lost hints cost a second: every daemon polls as well.
SELECT pg_notify('aisd_work', '')

-- name: listen_work
LISTEN aisd_work

-- name: copy_target_rows
-- migrate-store copies only into a database without aisd data.
SELECT (SELECT COUNT(*) FROM owners) + (SELECT COUNT(*) FROM tokens)
     + (SELECT COUNT(*) FROM imports) + (SELECT COUNT(*) FROM events)

-- name: copy_target_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = %(table)s
ORDER BY ordinal_position

-- name: copy_release_claims
-- The stopped daemon's claims: the first daemon on PostgreSQL adopts what was in flight.
UPDATE imports SET claimed_by = NULL WHERE claimed_by IS NOT NULL

-- name: commit_without_fsync
-- For claims only: a claim lost in a crash is harmless (a restart claims again), and the next
-- durable commit, which precedes every call sent upstream, flushes the WAL with it.
SET LOCAL synchronous_commit = off

-- name: lock_revocation
-- One revocation of a token at a time across daemons.
SELECT pg_advisory_xact_lock(5, hashtext(%(token_id)s))

-- name: revocation_state
-- The newest revocation of the token that was accepted, or that may still be awaiting its
-- answer (sent within the last few minutes, outcome not recorded yet).
SELECT outcome FROM accesses
WHERE token_id = %(token_id)s AND kind = 'revoke'
  AND (outcome = 'ok' OR (outcome IS NULL AND sent_at >= %(recent)s))
ORDER BY outcome IS NULL, id DESC
LIMIT 1

-- name: hold_term
-- A leader's duty writes only under the term it runs in (aisd.store._fence): the leader row is
-- held until the duty's transaction ends, so the lease cannot change hands in between, and
-- no row means the lease lapsed or passed to another daemon.
SELECT term FROM leader
WHERE id = 1 AND holder = %(holder)s AND term = %(term)s AND lease_until > clock_timestamp()
FOR SHARE
