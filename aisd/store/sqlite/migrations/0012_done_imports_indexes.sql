-- 0012_done_imports_indexes: an import enters the owner and token indexes when it ends, not
-- when it is queued. A planner tick queues hundreds of refreshes of tokens spread over the
-- whole table: each insert touched a random page of both indexes (half of the insert's cost
-- and most of the pages its commit wrote). Ended imports are what these indexes are read for
-- (an owner's raw replies and erasure, a token's earlier echo); the few open ones are found
-- by the partial indexes of open imports (imports_open, imports_one_open_refresh). An
-- import's end is one random page of each, in the transaction that stores its result.
-- Deleting an owner (erasure, which rewrites the whole file anyway) scans imports for the
-- foreign key, as deleting its sessions already did.
DROP INDEX imports_owner;
DROP INDEX imports_token;
CREATE INDEX imports_owner ON imports(owner_id, created_at) WHERE phase = 'done';
CREATE INDEX imports_token ON imports(token_id, created_at) WHERE phase = 'done';
