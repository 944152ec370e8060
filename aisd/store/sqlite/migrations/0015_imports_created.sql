-- 0015_imports_created: imports.list with no token, owner or state walks the imports newest
-- first and stops at its limit, instead of reading and sorting every import ever made (346 ms
-- at 138,000 imports). New imports are created at the present moment, so each insert lands
-- on the index's last pages: a tick's queued refreshes write a few pages together.
CREATE INDEX imports_created ON imports(created_at, id);
