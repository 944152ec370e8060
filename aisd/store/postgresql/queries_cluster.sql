-- What several daemons on one database need beyond the SQLite backend's statements: the locks
-- of the quota section and of intake, the leader lease, the cluster's status, notifications.
-- Advisory lock keys are (space, hashtext(...)); a hash collision only serialises more.

-- name: lock_session
-- One submit of a sessionId at a time across hosts: the second finds the first's consent.
SELECT pg_advisory_xact_lock(3, hashtext(%(session_id)s))

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
