-- 0011_data_fidelity: credit cards beside accounts, every owner block, the owner id Kontomatik
-- echoes, and the replies aisd refused to merge.
--
-- A credit card is merged like an account, so it lives in the same table and its rows in the
-- same transactions table: the change feed, erasure, retention and replay serve both alike.
-- The table is rebuilt because its key changes from (owner_id, iban) to (owner_id, kind, key):
-- key is an account's IBAN, a card's cardId (else its masked number). Row ids are kept, so the
-- transactions, change log and tombstones that reference them stay valid.

CREATE TABLE accounts_new (
    id                      INTEGER PRIMARY KEY,
    owner_id                INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    kind                    TEXT NOT NULL DEFAULT 'account' CHECK (kind IN ('account', 'card')),
    key                     TEXT NOT NULL,
    iban                    TEXT,  -- always set for an account; a card's own IBAN when it has one
    name                    TEXT,
    friendly_name           TEXT,
    currency_name           TEXT,
    balance                 TEXT,
    funds_available         TEXT,
    active_since_at_least   TEXT,
    direct_debit            INTEGER,
    partial_due_to_timeout  INTEGER NOT NULL DEFAULT 0,
    updated_at              TEXT NOT NULL,
    card_id                 TEXT,
    number                  TEXT,  -- a card's masked number
    card_limit              TEXT,
    interest                TEXT,
    due_date                TEXT,
    card_owner              TEXT,  -- a card's free-text owner (personal data)
    owners                  TEXT NOT NULL DEFAULT '[]',  -- JSON: every owner block (personal data)
    UNIQUE (owner_id, kind, key)
);
INSERT INTO accounts_new (id, owner_id, kind, key, iban, name, friendly_name, currency_name,
                          balance, funds_available, active_since_at_least, direct_debit,
                          partial_due_to_timeout, updated_at)
SELECT id, owner_id, 'account', iban, iban, name, friendly_name, currency_name, balance,
       funds_available, active_since_at_least, direct_debit, partial_due_to_timeout, updated_at
FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;

-- The ownerExternalId Kontomatik echoed for the import (kontomatik-<uuid> when the widget was
-- given none): owner-level calls use it, and a result filed under another owner is refused.
ALTER TABLE imports ADD COLUMN kontomatik_owner_id TEXT;

-- Replies that were received but not merged (an owner mismatch, an unexpected Reuse reply),
-- gzip-compressed, kept for inspection. Never replayed; erased with the owner's imports.
CREATE TABLE refused_replies (
    import_id       TEXT PRIMARY KEY REFERENCES imports(id) ON DELETE CASCADE,
    reason          TEXT NOT NULL,
    reply           BLOB NOT NULL,
    created_at      TEXT NOT NULL
);
