-- 0014_reuse_by_account: the Reuse ledger kept by bank account too. The planner tick asks which
-- accesses count against the accounts of its 500 due tokens; read by token (token_accounts both
-- ways, then accesses and its index) that took about five random pages a due token, wherever the
-- tokens sat in the file. Here an account's accesses are one range of one table clustered by
-- account and time: a due token's accounts cost a page or so each, mostly none.
--
-- A row per Reuse access (in flight or sent: any outcome but 'not_sent') of a token, per account
-- its token reaches NOW: each IBAN of its token_accounts, or the pseudo-account 'token:<id>'
-- while it has none (aisd.planner.pseudo_account; test_reuse_by_account checks they agree).
-- The triggers below keep that whatever writes accesses or token_accounts, in the writer's own
-- transaction: a token that learns an IBAN moves its accesses from its pseudo-account onto it.
-- Rows are kept as long as their access (the tick reads only its window of each account).
CREATE TABLE reuse_by_account (
    account     TEXT NOT NULL,
    sent_at     TEXT NOT NULL,
    access_id   INTEGER NOT NULL,
    token_id    TEXT NOT NULL,
    PRIMARY KEY (account, sent_at, access_id)
) WITHOUT ROWID;

INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
SELECT COALESCE(ta.iban, 'token:' || a.token_id), a.sent_at, a.id, a.token_id
FROM accesses AS a
LEFT JOIN token_accounts AS ta ON ta.token_id = a.token_id
WHERE a.kind = 'reuse' AND a.token_id IS NOT NULL AND a.outcome IS NOT 'not_sent';

CREATE TRIGGER reuse_by_account_insert AFTER INSERT ON accesses
WHEN NEW.kind = 'reuse' AND NEW.token_id IS NOT NULL AND NEW.outcome IS NOT 'not_sent'
BEGIN
    INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
    SELECT iban, NEW.sent_at, NEW.id, NEW.token_id FROM token_accounts
    WHERE token_id = NEW.token_id
    UNION ALL
    SELECT 'token:' || NEW.token_id, NEW.sent_at, NEW.id, NEW.token_id
    WHERE NOT EXISTS (SELECT 1 FROM token_accounts WHERE token_id = NEW.token_id);
END;

-- An outcome recorded ('ok', 'error') changes nothing here; 'not_sent', another token or time
-- does. One trigger, so the old rows go before the new ones come (the key may be the same).
-- The old rows are found by key: its token's accounts are the ones they were written under.
CREATE TRIGGER reuse_by_account_update AFTER UPDATE OF kind, token_id, sent_at, outcome ON accesses
WHEN (OLD.kind = 'reuse' AND OLD.token_id IS NOT NULL AND OLD.outcome IS NOT 'not_sent')
     IS NOT (NEW.kind = 'reuse' AND NEW.token_id IS NOT NULL AND NEW.outcome IS NOT 'not_sent')
  OR NEW.token_id IS NOT OLD.token_id OR NEW.sent_at IS NOT OLD.sent_at
BEGIN
    DELETE FROM reuse_by_account
    WHERE access_id = OLD.id AND sent_at = OLD.sent_at
      AND account IN (SELECT iban FROM token_accounts WHERE token_id = OLD.token_id
                      UNION ALL SELECT 'token:' || OLD.token_id);
    INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
    SELECT iban, NEW.sent_at, NEW.id, NEW.token_id FROM token_accounts
    WHERE token_id = NEW.token_id
      AND NEW.kind = 'reuse' AND NEW.outcome IS NOT 'not_sent'
    UNION ALL
    SELECT 'token:' || NEW.token_id, NEW.sent_at, NEW.id, NEW.token_id
    WHERE NEW.kind = 'reuse' AND NEW.token_id IS NOT NULL AND NEW.outcome IS NOT 'not_sent'
      AND NOT EXISTS (SELECT 1 FROM token_accounts WHERE token_id = NEW.token_id);
END;

CREATE TRIGGER reuse_by_account_delete AFTER DELETE ON accesses
BEGIN
    DELETE FROM reuse_by_account
    WHERE access_id = OLD.id AND sent_at = OLD.sent_at
      AND account IN (SELECT iban FROM token_accounts WHERE token_id = OLD.token_id
                      UNION ALL SELECT 'token:' || OLD.token_id);
END;

CREATE TRIGGER reuse_by_account_iban_added AFTER INSERT ON token_accounts
BEGIN
    DELETE FROM reuse_by_account WHERE account = 'token:' || NEW.token_id;
    INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
    SELECT NEW.iban, a.sent_at, a.id, a.token_id FROM accesses AS a
    WHERE a.token_id = NEW.token_id AND a.kind = 'reuse' AND a.outcome IS NOT 'not_sent';
END;

-- A row-level trigger: when a statement deletes a token's last IBAN its accesses fall back on
-- its pseudo-account (an erasure forgets a token's accounts, not its accesses).
CREATE TRIGGER reuse_by_account_iban_removed AFTER DELETE ON token_accounts
BEGIN
    DELETE FROM reuse_by_account WHERE account = OLD.iban AND token_id = OLD.token_id;
    INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
    SELECT 'token:' || OLD.token_id, a.sent_at, a.id, a.token_id FROM accesses AS a
    WHERE a.token_id = OLD.token_id AND a.kind = 'reuse' AND a.outcome IS NOT 'not_sent'
      AND NOT EXISTS (SELECT 1 FROM token_accounts WHERE token_id = OLD.token_id);
END;

CREATE TRIGGER reuse_by_account_iban_changed AFTER UPDATE OF token_id, iban ON token_accounts
BEGIN
    SELECT RAISE(ABORT, 'token_accounts rows are added or removed, never changed');
END;
