-- 0006_state_counts: tokens and imports counted by state, kept up to date by triggers.
--
-- The planner's STATUS= line (every tick) and daemon.status read these few rows instead of
-- counting every token and every import: imports grow by a few per token a day without bound,
-- so a GROUP BY over them is a scan that grows with the whole history. Any statement that
-- writes tokens or imports keeps the counts exact, bulk SQL and foreign-key cascades included.
-- A migration that rebuilds either table must create its triggers again.

CREATE TABLE state_counts (
    kind    TEXT NOT NULL CHECK (kind IN ('tokens', 'imports')),
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (kind, state)
) WITHOUT ROWID;

INSERT INTO state_counts (kind, state, n)
SELECT 'tokens', state, COUNT(*) FROM tokens GROUP BY state;
INSERT INTO state_counts (kind, state, n)
SELECT 'imports', state, COUNT(*) FROM imports GROUP BY state;

CREATE TRIGGER tokens_count_insert AFTER INSERT ON tokens
BEGIN
    INSERT INTO state_counts (kind, state, n) VALUES ('tokens', NEW.state, 1)
    ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tokens_count_update AFTER UPDATE OF state ON tokens
WHEN NEW.state IS NOT OLD.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = 'tokens' AND state = OLD.state;
    INSERT INTO state_counts (kind, state, n) VALUES ('tokens', NEW.state, 1)
    ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tokens_count_delete AFTER DELETE ON tokens
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = 'tokens' AND state = OLD.state;
END;

CREATE TRIGGER imports_count_insert AFTER INSERT ON imports
BEGIN
    INSERT INTO state_counts (kind, state, n) VALUES ('imports', NEW.state, 1)
    ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER imports_count_update AFTER UPDATE OF state ON imports
WHEN NEW.state IS NOT OLD.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = 'imports' AND state = OLD.state;
    INSERT INTO state_counts (kind, state, n) VALUES ('imports', NEW.state, 1)
    ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER imports_count_delete AFTER DELETE ON imports
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = 'imports' AND state = OLD.state;
END;
