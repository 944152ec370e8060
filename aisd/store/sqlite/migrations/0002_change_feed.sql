-- 0002_change_feed: a monotonically increasing change sequence on the merged view, for an
-- incremental feed (data.changes). Every write to a transaction takes the next value of the
-- 'change_seq' counter; removals leave a tombstone carrying their own sequence value.

CREATE TABLE counters (
    name    TEXT PRIMARY KEY,
    value   INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE transactions ADD COLUMN change_seq INTEGER;

-- Rows from before the feed existed: their id order is their insertion order.
UPDATE transactions SET change_seq = id;
INSERT INTO counters (name, value)
SELECT 'change_seq', COALESCE(MAX(id), 0) FROM transactions;

CREATE UNIQUE INDEX transactions_change_seq ON transactions(change_seq);

CREATE TABLE transaction_tombstones (
    change_seq      INTEGER PRIMARY KEY,
    transaction_id  INTEGER NOT NULL,
    account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    import_id       TEXT REFERENCES imports(id) ON DELETE SET NULL,
    removed_at      TEXT NOT NULL
);
CREATE INDEX transaction_tombstones_account ON transaction_tombstones(account_id);
