-- The pipeline looks for open imports every second. Ended ones pile up (four a token a day)
-- and a full index on phase makes that look cost more as history grows, or lets the planner
-- prefer a table scan once ANALYZE statistics exist. A partial index holds open imports only.
DROP INDEX imports_queue;
CREATE INDEX imports_open ON imports(phase, not_before) WHERE phase <> 'done';
