-- 0013_open_queue_indexes: a claiming round finds its few imports without reading the
-- whole queue. It looked for queued imports a lapsed claimer held, and for the next imports to
-- claim in queue order, on the index of open imports: every queued import read (and the
-- claimable ones sorted) at every round, 3 + 6 ms at 10,000 queued, which a burst of
-- consent.submit builds in seconds, so each round grew slower while intake filled the queue.
-- Queued imports nobody holds, in the order they are claimed (initial imports first, then
-- the oldest): a round reads as many entries as it has free slots. Both are partial indexes of
-- open imports, as the claiming round's every read must be (tests/integration/test_query_plans).
CREATE INDEX imports_open_queue ON imports(kind = 'refresh', created_at, id)
  WHERE phase = 'queued' AND claimed_by IS NULL;
-- Queued imports a claimer holds: a handful (claimed, not yet started).
CREATE INDEX imports_open_held ON imports(claimed_by)
  WHERE phase = 'queued' AND claimed_by IS NOT NULL;
