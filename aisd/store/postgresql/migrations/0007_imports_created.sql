-- 0007_imports_created: imports.list with no token, owner or state walks the imports newest
-- first and stops at its limit (as SQLite's 0015), instead of sorting every import ever made.
-- New imports are created at the present moment: each insert lands on the index's last pages.
CREATE INDEX imports_created ON imports(created_at, id);
