-- 0003_data_fidelity: as the SQLite backend's 0011_data_fidelity. Credit cards beside accounts
-- in one table (so the change feed, erasure, retention and replay serve both alike), every
-- owner block, the owner id Kontomatik echoes, and the replies aisd refused to merge.
--
-- The key changes from (owner_id, iban) to (owner_id, kind, key): key is an account's IBAN, a
-- card's cardId (else its masked number). PostgreSQL alters the table in place, so row ids,
-- and the transactions, change log and tombstones that reference them, stay as they are.
ALTER TABLE accounts
    ADD COLUMN kind text NOT NULL DEFAULT 'account' CHECK (kind IN ('account', 'card')),
    ADD COLUMN key text,
    ADD COLUMN card_id text,
    ADD COLUMN number text,                       -- a card's masked number
    ADD COLUMN card_limit text,
    ADD COLUMN interest text,
    ADD COLUMN due_date text,
    ADD COLUMN card_owner text,                   -- a card's free-text owner (personal data)
    ADD COLUMN owners text NOT NULL DEFAULT '[]', -- JSON: every owner block (personal data)
    ALTER COLUMN iban DROP NOT NULL,              -- always set for an account
    ALTER COLUMN currency_name DROP NOT NULL;
UPDATE accounts SET key = iban;
ALTER TABLE accounts
    ALTER COLUMN key SET NOT NULL,
    DROP CONSTRAINT accounts_owner_id_iban_key,
    ADD CONSTRAINT accounts_owner_id_kind_key_key UNIQUE (owner_id, kind, key);

-- The ownerExternalId Kontomatik echoed for the import (kontomatik-<uuid> when the widget was
-- given none): owner-level calls use it, and a result filed under another owner is refused.
ALTER TABLE imports ADD COLUMN kontomatik_owner_id text;

-- Replies that were received but not merged (an owner mismatch, an unexpected Reuse reply),
-- gzip-compressed, kept for inspection. Never replayed; erased with the owner's imports.
CREATE TABLE refused_replies (
    import_id       text PRIMARY KEY REFERENCES imports(id) ON DELETE CASCADE,
    reason          text NOT NULL,
    reply           bytea NOT NULL,
    created_at      text NOT NULL
);
