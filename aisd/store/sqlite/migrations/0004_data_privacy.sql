-- 0004_data_privacy: an exact incremental feed, erasure that keeps billing whole.
--
-- The feed (data.changes) reads a change log: transaction_changes holds one row per insert or
-- update of a merged transaction (written by triggers, so the merge code stays as it is) and
-- transaction_tombstones one per removal, both keyed by the 'change_seq' counter of 0002. A
-- page is a range of that sequence, so paging never skips or repeats a change.
--
-- Transaction ids must never be reused, or a removal and a later insert would share an id in
-- the feed: the table is rebuilt with AUTOINCREMENT, its sequence starting above every id ever
-- handed out (tombstones included).
--
-- Erasure deletes an owner's rows but keeps anonymous facts: tombstones lose their account
-- (so feed consumers still learn to delete the rows), and the successful imports of the
-- owner's tokens are copied into billing_imports before the imports are deleted.

CREATE TABLE transactions_new (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
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
    labels              TEXT NOT NULL DEFAULT '[]',
    extra               TEXT NOT NULL DEFAULT '[]',
    first_import_id     TEXT REFERENCES imports(id) ON DELETE SET NULL,
    last_import_id      TEXT REFERENCES imports(id) ON DELETE SET NULL,
    change_seq          INTEGER
);
INSERT INTO transactions_new
SELECT id, account_id, transaction_on, booked_on, amount, balance, title, party, party_iban,
       kind, status, labels, extra, first_import_id, last_import_id, change_seq
FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_new RENAME TO transactions;
CREATE INDEX transactions_account ON transactions(account_id, transaction_on);
CREATE UNIQUE INDEX transactions_change_seq ON transactions(change_seq);
CREATE INDEX transactions_on ON transactions(transaction_on);

INSERT INTO sqlite_sequence (name, seq)
SELECT 'transactions', 0
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'transactions');
UPDATE sqlite_sequence
SET seq = MAX(seq, (SELECT COALESCE(MAX(transaction_id), 0) FROM transaction_tombstones))
WHERE name = 'transactions';

CREATE TABLE transaction_tombstones_new (
    change_seq      INTEGER PRIMARY KEY,
    transaction_id  INTEGER NOT NULL,
    account_id      INTEGER REFERENCES accounts(id) ON DELETE SET NULL,  -- NULL: forgotten
    import_id       TEXT REFERENCES imports(id) ON DELETE SET NULL,
    removed_at      TEXT NOT NULL
);
INSERT INTO transaction_tombstones_new
SELECT change_seq, transaction_id, account_id, import_id, removed_at FROM transaction_tombstones;
DROP TABLE transaction_tombstones;
ALTER TABLE transaction_tombstones_new RENAME TO transaction_tombstones;
CREATE INDEX transaction_tombstones_account ON transaction_tombstones(account_id);

CREATE TABLE transaction_changes (
    change_seq      INTEGER PRIMARY KEY,
    transaction_id  INTEGER NOT NULL,
    account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('added', 'modified'))
);
CREATE INDEX transaction_changes_account ON transaction_changes(account_id, change_seq);
CREATE INDEX transaction_changes_transaction ON transaction_changes(transaction_id);

-- Rows from before the log existed: each is known by its latest write only.
INSERT INTO transaction_changes (change_seq, transaction_id, account_id, kind)
SELECT change_seq, id, account_id, 'added' FROM transactions WHERE change_seq IS NOT NULL;

CREATE TRIGGER transactions_log_insert AFTER INSERT ON transactions
WHEN NEW.change_seq IS NOT NULL
BEGIN
    INSERT INTO transaction_changes (change_seq, transaction_id, account_id, kind)
    VALUES (NEW.change_seq, NEW.id, NEW.account_id, 'added');
END;

CREATE TRIGGER transactions_log_update AFTER UPDATE OF change_seq ON transactions
WHEN NEW.change_seq IS NOT OLD.change_seq AND NEW.change_seq IS NOT NULL
BEGIN
    INSERT INTO transaction_changes (change_seq, transaction_id, account_id, kind)
    VALUES (NEW.change_seq, NEW.id, NEW.account_id, 'modified');
END;

CREATE TABLE billing_imports (
    id              INTEGER PRIMARY KEY,
    token_id        TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('initial', 'refresh')),
    finished_at     TEXT NOT NULL
);
CREATE INDEX billing_imports_token ON billing_imports(token_id, finished_at);
