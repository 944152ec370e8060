-- 0005_done_imports_indexes: an import enters the owner and token indexes when it ends, not
-- when it is queued (as SQLite's 0012). A planner tick queues hundreds of refreshes of tokens
-- spread over the whole table, and each insert dirtied a random page of both indexes. Ended
-- imports are what these indexes are read for; the few open ones are found by the partial
-- indexes of open imports (imports_open, imports_one_open_refresh).
DROP INDEX imports_owner;
DROP INDEX imports_token;
CREATE INDEX imports_owner ON imports(owner_id, created_at) WHERE phase = 'done';
CREATE INDEX imports_token ON imports(token_id, created_at) WHERE phase = 'done';
