-- 0004_event_origin: which daemon appended each event, so that its log line is written by
-- that daemon alone, whichever daemon reads the feed. Every session a daemon opens carries
-- its name in the setting aisd.origin (aisd.store.postgresql._connect); a session without it
-- (a copy by `aisd migrate-store`, a hand-run statement) leaves the column empty.
ALTER TABLE events
    ADD COLUMN origin text DEFAULT nullif(current_setting('aisd.origin', true), '');
