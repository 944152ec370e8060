-- 0001_initial: the core schema.
--
-- Conventions: times are ISO-8601 UTC text of fixed width with microseconds and a 'Z'
-- ('2026-11-28T10:00:00.000000Z'), so text order is time order and indexes on times work;
-- dates are 'YYYY-MM-DD'; amounts are decimal text, exact as the bank sent them.
-- Rows that billing and the quota need (tokens, imports, accesses, events) reference owners with
-- ON DELETE SET NULL, so forgetting an owner leaves them anonymous instead of deleting them.

CREATE TABLE owners (
    id              INTEGER PRIMARY KEY,
    external_id     TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    persons         TEXT,  -- JSON [{name, kind, address}] of the newest successful import
    persons_at      TEXT
);

CREATE TABLE consents (
    id              INTEGER PRIMARY KEY,
    owner_id        INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL UNIQUE,
    target          TEXT,
    refresh_until   TEXT,
    max_imports     INTEGER,
    created_at      TEXT NOT NULL
);
CREATE INDEX consents_owner ON consents(owner_id);

-- Kontomatik sessions: the widget's and those Reuse Multiple Access returns. The signature is a
-- secret; it leaves this table only towards Kontomatik.
CREATE TABLE sessions (
    id              INTEGER PRIMARY KEY,
    owner_id        INTEGER REFERENCES owners(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL UNIQUE,
    signature       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX sessions_owner ON sessions(owner_id);

CREATE TABLE tokens (
    id                  TEXT PRIMARY KEY,  -- 'tok_' + 16 random hex chars, never derived from the secret
    owner_id            INTEGER REFERENCES owners(id) ON DELETE SET NULL,
    consent_id          INTEGER UNIQUE REFERENCES consents(id) ON DELETE SET NULL,
    multiple_access_id  TEXT,  -- the secret; NULL once the token is final and forgotten
    state               TEXT NOT NULL
                        CHECK (state IN ('active', 'reauth_required', 'revoked', 'expired')),
    created_at          TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    state_changed_at    TEXT,
    next_refresh_at     TEXT,
    last_import_at      TEXT,
    refresh_until       TEXT,
    max_imports         INTEGER,
    deferred_reason     TEXT,
    quota_refused_at    TEXT   -- last MultipleAccessLimitExceeded: the planner defers from it
);
CREATE INDEX tokens_due ON tokens(state, next_refresh_at);
CREATE INDEX tokens_owner ON tokens(owner_id);

-- Which bank accounts a token reaches: the quota is per bank account, shared by tokens.
CREATE TABLE token_accounts (
    token_id        TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    iban            TEXT NOT NULL,
    first_seen_at   TEXT NOT NULL,
    PRIMARY KEY (token_id, iban)
) WITHOUT ROWID;
CREATE INDEX token_accounts_iban ON token_accounts(iban);

CREATE TABLE imports (
    id                      TEXT PRIMARY KEY,  -- 'imp_' + 16 random hex chars
    owner_id                INTEGER REFERENCES owners(id) ON DELETE SET NULL,
    token_id                TEXT REFERENCES tokens(id) ON DELETE SET NULL,
    consent_id              INTEGER REFERENCES consents(id) ON DELETE SET NULL,
    session_ref             INTEGER REFERENCES sessions(id) ON DELETE SET NULL,
    kind                    TEXT NOT NULL CHECK (kind IN ('initial', 'refresh')),
    state                   TEXT NOT NULL
                            CHECK (state IN ('queued', 'running', 'successful', 'failed')),
    phase                   TEXT NOT NULL
                            CHECK (phase IN ('queued', 'reusing', 'ready', 'starting', 'polling',
                                             'done')),
    since                   TEXT NOT NULL,
    command_id              TEXT,
    polls                   INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    started_at              TEXT,
    finished_at             TEXT,
    last_poll_at            TEXT,
    not_before              TEXT,
    attempts                INTEGER NOT NULL DEFAULT 0,
    default_import_attempts INTEGER NOT NULL DEFAULT 0,
    accounts                INTEGER,
    transactions            INTEGER,
    added                   INTEGER,
    modified                INTEGER,
    removed                 INTEGER,
    error_name              TEXT,
    error_message           TEXT
);
CREATE INDEX imports_queue ON imports(phase, not_before);
CREATE INDEX imports_owner ON imports(owner_id, created_at);
CREATE INDEX imports_token ON imports(token_id, created_at);
CREATE INDEX imports_state ON imports(state, created_at);
CREATE INDEX imports_finished ON imports(finished_at);
CREATE INDEX imports_consent ON imports(consent_id);

-- The access ledger: a row per upstream call, committed before the call is sent.
CREATE TABLE accesses (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('reuse', 'default_import', 'revoke')),
    token_id        TEXT REFERENCES tokens(id) ON DELETE SET NULL,
    import_id       TEXT REFERENCES imports(id) ON DELETE SET NULL,
    session_id      TEXT,
    sent_at         TEXT NOT NULL,
    outcome         TEXT CHECK (outcome IN ('ok', 'error', 'not_sent')),  -- NULL: in flight
    error_name      TEXT
);
CREATE INDEX accesses_sent_at ON accesses(sent_at);
CREATE INDEX accesses_token ON accesses(token_id, sent_at);
CREATE INDEX accesses_import ON accesses(import_id);

CREATE TABLE accounts (
    id                      INTEGER PRIMARY KEY,
    owner_id                INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    iban                    TEXT NOT NULL,
    name                    TEXT,
    friendly_name           TEXT,
    currency_name           TEXT NOT NULL,
    balance                 TEXT,
    funds_available         TEXT,
    active_since_at_least   TEXT,
    direct_debit            INTEGER,
    partial_due_to_timeout  INTEGER NOT NULL DEFAULT 0,
    updated_at              TEXT NOT NULL,
    UNIQUE (owner_id, iban)
);

-- The merged view: one row per real-world transaction, with a local id stable across imports.
CREATE TABLE transactions (
    id                  INTEGER PRIMARY KEY,
    account_id          INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    transaction_on      TEXT NOT NULL,
    booked_on           TEXT,
    amount              TEXT NOT NULL,
    balance             TEXT,
    title               TEXT NOT NULL,
    party               TEXT,
    party_iban          TEXT,
    kind                TEXT,
    status              TEXT,
    labels              TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
    extra               TEXT NOT NULL DEFAULT '[]',  -- JSON array of [name, value]
    first_import_id     TEXT REFERENCES imports(id) ON DELETE SET NULL,  -- the one that added it
    last_import_id      TEXT REFERENCES imports(id) ON DELETE SET NULL   -- the last one to write it
);
CREATE INDEX transactions_account ON transactions(account_id, transaction_on);

-- Replies as received (gzip), so the merged view can be rebuilt by a better parser or merge.
CREATE TABLE raw_replies (
    import_id       TEXT PRIMARY KEY REFERENCES imports(id) ON DELETE CASCADE,
    coverage_start  TEXT NOT NULL,
    reply           BLOB NOT NULL,
    created_at      TEXT NOT NULL
);

-- The durable feed. INTEGER PRIMARY KEY without AUTOINCREMENT takes max(id) + 1 and rows are
-- never deleted, so ids ascend without gaps (a rolled-back insert leaves no hole).
CREATE TABLE events (
    id                  INTEGER PRIMARY KEY,
    at                  TEXT NOT NULL,
    type                TEXT NOT NULL,
    owner_external_id   TEXT,
    token_id            TEXT,
    import_id           TEXT,
    data                TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_owner ON events(owner_external_id);
