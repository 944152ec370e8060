-- 0003_tokens_planner: what the planner keeps per token, the expiry warnings already raised, and
-- a view that shapes a token as the store hands it out.
--
-- next_refresh_at and next_warning_at are NULL for final tokens, so the (state, time) indexes
-- hold only what a tick may have to act on. A token's end time is its state_changed_at once its
-- state is final; a final token's multiple_access_id is NULL (the secret is useless by then).

ALTER TABLE tokens RENAME COLUMN deferred_reason TO plan_reason;
ALTER TABLE tokens ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;  -- consecutive failed refreshes
ALTER TABLE tokens ADD COLUMN upstream_deferred_until TEXT;  -- after MultipleAccessLimitExceeded
ALTER TABLE tokens ADD COLUMN imports_done INTEGER NOT NULL DEFAULT 0;  -- successful imports
ALTER TABLE tokens ADD COLUMN last_refresh_at TEXT;  -- newest Reuse sent (not_sent excluded)
ALTER TABLE tokens ADD COLUMN next_warning_at TEXT;  -- when the next token.expiring threshold passes
ALTER TABLE tokens ADD COLUMN state_reason TEXT;  -- why the state left 'active'

CREATE TABLE token_warnings (
    token_id    TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    day         INTEGER NOT NULL,  -- the threshold: days before expires_at
    raised_at   TEXT NOT NULL,
    PRIMARY KEY (token_id, day)
) WITHOUT ROWID;

-- Tokens from before the planner existed: active ones are due at the first tick (which plans
-- them against the quota) and have their warnings evaluated then.
UPDATE tokens SET
    imports_done = (
        SELECT COUNT(*) FROM imports AS i WHERE i.token_id = tokens.id AND i.state = 'successful'
    ),
    last_refresh_at = (
        SELECT MAX(a.sent_at) FROM accesses AS a
        WHERE a.token_id = tokens.id AND a.kind = 'reuse'
          AND (a.outcome IS NULL OR a.outcome <> 'not_sent')
    ),
    next_refresh_at = CASE WHEN state = 'active' THEN COALESCE(next_refresh_at, created_at) END,
    next_warning_at = CASE WHEN state = 'active' THEN created_at END,
    state_reason = CASE state
        WHEN 'active' THEN NULL
        WHEN 'reauth_required' THEN 'InvalidMultipleAccessId'
        ELSE state
    END,
    state_changed_at = COALESCE(state_changed_at, created_at),
    multiple_access_id = CASE WHEN state = 'active' THEN multiple_access_id END;

CREATE INDEX tokens_warning ON tokens(state, next_warning_at);
CREATE INDEX tokens_expiry ON tokens(state, expires_at);

-- A token as TokenRecord carries it. Simple enough for SQLite to flatten into the outer query,
-- so a filter on state and a time still runs as a range scan of the matching index.
CREATE VIEW token_records AS
SELECT t.id AS token_id,
       t.rowid AS row_order,
       o.external_id AS owner_external_id,
       t.state,
       t.created_at,
       t.expires_at,
       t.last_import_at,
       t.last_refresh_at,
       t.next_refresh_at,
       t.plan_reason,
       t.failures,
       t.upstream_deferred_until,
       t.refresh_until,
       t.max_imports,
       t.imports_done,
       t.next_warning_at,
       t.state_reason,
       CASE WHEN t.state <> 'active' THEN t.state_changed_at END AS ended_at,
       (SELECT json_group_array(a.iban) FROM token_accounts AS a WHERE a.token_id = t.id)
           AS accounts,
       (SELECT json_group_array(w.day) FROM token_warnings AS w WHERE w.token_id = t.id)
           AS warned_days
FROM tokens AS t
LEFT JOIN owners AS o ON o.id = t.owner_id;
