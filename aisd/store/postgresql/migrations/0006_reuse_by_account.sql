-- 0006_reuse_by_account: the Reuse ledger kept by bank account too (as SQLite's 0014, which
-- explains why: the planner tick reads its due tokens' accounts as one range each instead of
-- walking token_accounts and accesses). A row per Reuse access (any outcome but 'not_sent') of
-- a token, per account its token reaches now: each IBAN of its token_accounts, or the
-- pseudo-account 'token:<id>' while it has none (aisd.planner.pseudo_account). The triggers
-- keep that in the writer's own transaction, whatever writes accesses or token_accounts.
CREATE TABLE reuse_by_account (
    account     text NOT NULL,
    sent_at     text NOT NULL,
    access_id   bigint NOT NULL,
    token_id    text NOT NULL,
    PRIMARY KEY (account, sent_at, access_id)
);

INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
SELECT COALESCE(ta.iban, 'token:' || a.token_id), a.sent_at, a.id, a.token_id
FROM accesses AS a
LEFT JOIN token_accounts AS ta ON ta.token_id = a.token_id
WHERE a.kind = 'reuse' AND a.token_id IS NOT NULL AND a.outcome IS DISTINCT FROM 'not_sent';

-- The old rows are found by key: their token's accounts are the ones they were written under.
CREATE FUNCTION reuse_by_account_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind = 'reuse' AND OLD.token_id IS NOT NULL
       AND OLD.outcome IS DISTINCT FROM 'not_sent' THEN
        DELETE FROM reuse_by_account
        WHERE access_id = OLD.id AND sent_at = OLD.sent_at
          AND account IN (SELECT iban FROM token_accounts WHERE token_id = OLD.token_id
                          UNION ALL SELECT 'token:' || OLD.token_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.kind = 'reuse' AND NEW.token_id IS NOT NULL
       AND NEW.outcome IS DISTINCT FROM 'not_sent' THEN
        INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
        SELECT iban, NEW.sent_at, NEW.id, NEW.token_id FROM token_accounts
        WHERE token_id = NEW.token_id
        UNION ALL
        SELECT 'token:' || NEW.token_id, NEW.sent_at, NEW.id, NEW.token_id
        WHERE NOT EXISTS (SELECT 1 FROM token_accounts WHERE token_id = NEW.token_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER reuse_by_account_insert AFTER INSERT OR DELETE ON accesses
FOR EACH ROW EXECUTE FUNCTION reuse_by_account_access();
-- An outcome recorded ('ok', 'error') changes nothing here; 'not_sent', another token or time does.
CREATE TRIGGER reuse_by_account_update AFTER UPDATE OF kind, token_id, sent_at, outcome ON accesses
FOR EACH ROW
WHEN ((OLD.kind = 'reuse' AND OLD.token_id IS NOT NULL AND OLD.outcome IS DISTINCT FROM 'not_sent')
      IS DISTINCT FROM
      (NEW.kind = 'reuse' AND NEW.token_id IS NOT NULL AND NEW.outcome IS DISTINCT FROM 'not_sent')
      OR NEW.token_id IS DISTINCT FROM OLD.token_id OR NEW.sent_at IS DISTINCT FROM OLD.sent_at)
EXECUTE FUNCTION reuse_by_account_access();

CREATE FUNCTION reuse_by_account_iban() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        DELETE FROM reuse_by_account WHERE account = 'token:' || NEW.token_id;
        INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
        SELECT NEW.iban, a.sent_at, a.id, a.token_id FROM accesses AS a
        WHERE a.token_id = NEW.token_id AND a.kind = 'reuse'
          AND a.outcome IS DISTINCT FROM 'not_sent';
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM reuse_by_account WHERE account = OLD.iban AND token_id = OLD.token_id;
        -- Row triggers run after their whole statement here: each of a token's IBANs deleted
        -- together finds none left, and the pseudo-account's rows come once.
        INSERT INTO reuse_by_account (account, sent_at, access_id, token_id)
        SELECT 'token:' || OLD.token_id, a.sent_at, a.id, a.token_id FROM accesses AS a
        WHERE a.token_id = OLD.token_id AND a.kind = 'reuse'
          AND a.outcome IS DISTINCT FROM 'not_sent'
          AND NOT EXISTS (SELECT 1 FROM token_accounts WHERE token_id = OLD.token_id)
        ON CONFLICT DO NOTHING;
    ELSE
        RAISE EXCEPTION 'token_accounts rows are added or removed, never changed';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER reuse_by_account_iban AFTER INSERT OR DELETE OR UPDATE OF token_id, iban
ON token_accounts FOR EACH ROW EXECUTE FUNCTION reuse_by_account_iban();
