-- The scale bench's population, set-based: bench/scale_bench.py (populate) runs it in one
-- transaction on a freshly migrated database, after filling temp.p with one row: n (tokens),
-- owners, now_us (microseconds since the epoch) and seed.
--
-- The rows are those the store itself leaves for a consent whose first import succeeded and for
-- a Reuse refresh that succeeded: the same columns, the same id and time formats (ids 'tok_' /
-- 'imp_' + 16 hex digits, times fixed-width ISO-8601 UTC with microseconds and a 'Z', dates
-- 'YYYY-MM-DD'). Nothing is random: each draw is a hash of the token's number and the seed,
--     ((i + 1) * M + seed * 40503) % 4294967291 / 4294967291.0      (uniform in [0, 1))
-- with its own prime multiplier M per draw; every product stays far below 2^63. Ids are
-- 32-bit bijections of the row's number behind another hash, so unique and in random order.

-- Times in microseconds (us) and as stored text (the *_at columns).
CREATE TEMP TABLE d AS
WITH RECURSIVE seq(i) AS (
    SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < (SELECT n FROM temp.p)
),
u AS (
    SELECT seq.i, p.now_us, p.owners,
           ((seq.i + 1) * 2654435761 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_final,
           ((seq.i + 1) * 2246822519 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_state,
           ((seq.i + 1) * 3266489917 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_age,
           ((seq.i + 1) * 668265263 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_second,
           ((seq.i + 1) * 374761393 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_took,
           ((seq.i + 1) * 1181783497 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_reused,
           ((seq.i + 1) * 1103515245 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_reuses,
           ((seq.i + 1) * 2891336453 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_next,
           ((seq.i + 1) * 1664525 + p.seed * 40503) % 4294967291 / 4294967291.0 AS u_ended
    FROM seq, temp.p AS p
),
s AS (
    SELECT *, i % owners + 1 AS owner,
           CASE WHEN u_final >= 0.05 THEN 'active'
                WHEN u_state < 1 / 3.0 THEN 'revoked'
                WHEN u_state < 2 / 3.0 THEN 'expired'
                ELSE 'reauth_required' END AS state
    FROM u
),
c AS (
    SELECT *,
           now_us - 3600000000
               - CAST(CASE WHEN state = 'expired' THEN 181 + u_age * 20 ELSE u_age * 160 END
                      * 86400000000 AS INTEGER) AS created_us
    FROM s
),
e AS (
    SELECT *,
           created_us + 180 * 86400000000 AS expires_us,
           created_us + CAST((20 + u_took * 40) * 1000000 AS INTEGER) AS finished_us
    FROM c
)
SELECT i, owner, state, now_us, owners, created_us, finished_us, u_ended,
       'tok_' || printf('%08x%08x', ((i + 1) * 4093082899) % 4294967291,
                        (i * 2654435761) % 4294967296) AS token_id,
       printf('owner-%08d', owner) AS owner_ext,
       printf('sess-%09d', i) AS session_id,
       1 + (u_second < 0.3) AS n_accounts,
       -- Only an owner's first token has recent reuses: the owner's tokens share an account, and
       -- three reuses of one token stay within the four per account a day aisd itself allows.
       CASE WHEN state = 'active' AND i < owners AND u_reused < 0.25
            THEN 1 + CAST(u_reuses * 3 AS INTEGER) ELSE 0 END AS reuses,
       expires_us,
       CASE WHEN state = 'active' THEN created_us
            WHEN state = 'expired' THEN expires_us
            ELSE MIN(now_us, created_us + CAST(u_ended * (expires_us - created_us) AS INTEGER))
       END AS changed_us,
       CASE WHEN state = 'active'
            THEN now_us + 600000000 + CAST(u_next * (86400000000 - 600000000) AS INTEGER)
       END AS next_us,
       strftime('%Y-%m-%dT%H:%M:%S', created_us / 1000000, 'unixepoch')
           || printf('.%06dZ', created_us % 1000000) AS created_at,
       strftime('%Y-%m-%dT%H:%M:%S', finished_us / 1000000, 'unixepoch')
           || printf('.%06dZ', finished_us % 1000000) AS finished_at
FROM e;

-- The Reuse accesses of the last 24 h: 1 to 3 per reused token, k = 1.. in time order.
CREATE TEMP TABLE r AS
-- Each falls after the token's first import ended and ends (30 s later) before now, within
-- the last 24 h.
WITH bounds AS (
    SELECT i, reuses, now_us, MAX(finished_us + 60000000, now_us - 86400000000) AS from_us
    FROM d WHERE reuses > 0
),
draws AS (
    SELECT b.i, b.from_us + CAST(((b.i + 1) * (2 * k.k + 1) * 97003 + k.k * 7919) % 4294967291
                                 / 4294967291.0 * (b.now_us - 60000000 - b.from_us) AS INTEGER) AS at_us
    FROM bounds AS b
    JOIN (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) AS k ON k.k <= b.reuses
)
SELECT i, at_us, ROW_NUMBER() OVER (PARTITION BY i ORDER BY at_us) AS k FROM draws;

-- Every import: each token's initial one (k = 0), then its refreshes, as finish_success leaves
-- them; the ledger and the feed are derived from these rows.
CREATE TEMP TABLE imp AS
WITH rows_(i, k, consent, kind, since_us, started_us, finished_us, transactions) AS (
    SELECT i, 0, i + 1, 'initial', created_us - 365 * 86400000000, created_us, finished_us,
           40 * n_accounts
    FROM d
    UNION ALL
    SELECT i, k, NULL, 'refresh', at_us - 3 * 86400000000, at_us, at_us + 30000000, 5 FROM r
)
SELECT x.i, x.k, x.consent, x.kind, x.started_us, x.finished_us, x.transactions,
       d.token_id, d.owner, d.owner_ext, d.n_accounts,
       'imp_' || printf('%08x%08x', ((x.i * 4 + x.k + 1) * 2971215073) % 4294967291,
                        ((x.i * 4 + x.k) * 2654435761) % 4294967296) AS id,
       date(x.since_us / 1000000, 'unixepoch') AS since,
       strftime('%Y-%m-%dT%H:%M:%S', x.started_us / 1000000, 'unixepoch')
           || printf('.%06dZ', x.started_us % 1000000) AS started_at,
       strftime('%Y-%m-%dT%H:%M:%S', x.finished_us / 1000000, 'unixepoch')
           || printf('.%06dZ', x.finished_us % 1000000) AS finished_at
FROM rows_ AS x JOIN d ON d.i = x.i;

-- Per token: its newest import's end and newest Reuse (NULL without one), imports done.
CREATE TEMP TABLE latest AS
SELECT i, MAX(finished_us) AS last_import_us, MAX(CASE WHEN k > 0 THEN started_us END) AS reuse_us,
       COUNT(*) AS done
FROM imp GROUP BY i;
CREATE UNIQUE INDEX temp.latest_i ON latest(i);

INSERT INTO owners (id, external_id, created_at)
SELECT owner, owner_ext, created_at FROM d WHERE i < owners ORDER BY owner;

INSERT INTO consents (id, owner_id, session_id, target, created_at)
SELECT i + 1, owner, session_id, 'PkoBp', created_at FROM d ORDER BY i;

INSERT INTO sessions (id, owner_id, session_id, signature, created_at)
SELECT i + 1, owner, session_id,
       'sig-' || printf('%08x%08x', ((i + 1) * 3037000493) % 4294967291,
                        ((i + 1) * 2860486313) % 4294967291),
       created_at
FROM d ORDER BY i;

INSERT INTO tokens (id, owner_id, consent_id, multiple_access_id, state, created_at, expires_at,
                    state_changed_at, next_refresh_at, last_import_at, plan_reason,
                    imports_done, last_refresh_at, next_warning_at, state_reason)
SELECT d.token_id, d.owner, d.i + 1,
       CASE WHEN d.state = 'active'
            THEN 'maid-' || printf('%08x%08x', ((d.i + 1) * 1500450271) % 4294967291,
                                   ((d.i + 1) * 3267000013) % 4294967291) END,
       d.state,
       d.created_at,
       strftime('%Y-%m-%dT%H:%M:%S', d.expires_us / 1000000, 'unixepoch')
           || printf('.%06dZ', d.expires_us % 1000000),
       strftime('%Y-%m-%dT%H:%M:%S', d.changed_us / 1000000, 'unixepoch')
           || printf('.%06dZ', d.changed_us % 1000000),
       strftime('%Y-%m-%dT%H:%M:%S', d.next_us / 1000000, 'unixepoch')
           || printf('.%06dZ', d.next_us % 1000000),
       strftime('%Y-%m-%dT%H:%M:%S', l.last_import_us / 1000000, 'unixepoch')
           || printf('.%06dZ', l.last_import_us % 1000000),
       'scheduled',
       l.done,
       strftime('%Y-%m-%dT%H:%M:%S', l.reuse_us / 1000000, 'unixepoch')
           || printf('.%06dZ', l.reuse_us % 1000000),
       CASE WHEN d.state = 'active'
            THEN strftime('%Y-%m-%dT%H:%M:%S', d.expires_us / 1000000 - 14 * 86400, 'unixepoch')
                 || printf('.%06dZ', d.expires_us % 1000000) END,
       CASE WHEN d.state <> 'active' THEN d.state END
FROM d JOIN temp.latest AS l ON l.i = d.i
ORDER BY d.i;

-- The bank accounts each token reaches, seen at its first import (an owner's tokens share them).
INSERT INTO token_accounts (token_id, iban, first_seen_at)
SELECT d.token_id,
       'PL' || printf('%02d', (d.owner * 7 + j.j) % 90 + 10) || '1370131400'
           || printf('%010d', d.owner) || printf('%04d', j.j),
       d.finished_at
FROM d JOIN (SELECT 0 AS j UNION ALL SELECT 1) AS j ON j.j < d.n_accounts
ORDER BY d.i, j.j;

INSERT INTO imports (id, owner_id, token_id, consent_id, session_ref, kind, state, phase, since,
                     command_id, polls, created_at, started_at, finished_at, accounts,
                     transactions)
SELECT id, owner, token_id, consent, consent, kind, 'successful', 'done', since,
       printf('cmd-%d-%d', i, k), 2, started_at, started_at, finished_at, n_accounts,
       transactions
FROM imp ORDER BY i, k;

-- The ledger: a Reuse before each refresh's Default Import, a Default Import per import.
INSERT INTO accesses (kind, token_id, import_id, session_id, sent_at, outcome)
SELECT a.kind, imp.token_id, imp.id,
       CASE WHEN imp.k = 0 THEN printf('sess-%09d', imp.i)
            ELSE printf('reuse-%d-%d', imp.i, imp.k) END,
       imp.started_at, 'ok'
FROM imp
JOIN (SELECT 0 AS o, 'reuse' AS kind UNION ALL SELECT 1, 'default_import') AS a
  ON a.o = 1 OR imp.k > 0
ORDER BY imp.i, imp.k, a.o;

-- The feed: consent.received and import.succeeded of the first import, import.succeeded of
-- each refresh.
INSERT INTO events (at, type, owner_external_id, token_id, import_id, data)
SELECT CASE WHEN w.o = 0 THEN imp.started_at ELSE imp.finished_at END,
       CASE WHEN w.o = 0 THEN 'consent.received' ELSE 'import.succeeded' END,
       imp.owner_ext, imp.token_id, imp.id,
       CASE WHEN w.o = 0 THEN '{"target": "PkoBp"}' ELSE '{}' END
FROM imp
JOIN (SELECT 0 AS o UNION ALL SELECT 1) AS w ON w.o = 1 OR imp.k = 0
ORDER BY imp.i, imp.k, w.o;

DROP TABLE temp.d;
DROP TABLE temp.r;
DROP TABLE temp.imp;
DROP TABLE temp.latest;
