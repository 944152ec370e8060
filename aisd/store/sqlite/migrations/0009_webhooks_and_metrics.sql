-- 0009_webhooks_and_metrics: a delivery cursor per webhook endpoint, and an index for the
-- stale-token gauge of /metrics.
--
-- A row per endpoint URL ever configured (AISD_WEBHOOK_URL). `cursor` is the last event id the
-- endpoint acknowledged with a 2xx (or that AISD_WEBHOOK_EVENTS passed over): delivery resumes
-- after it, so a restart repeats at most the one event in flight. `attempts` and
-- `next_attempt_at` belong to the event after the cursor, which holds back the later ones.
CREATE TABLE webhook_endpoints (
    url                 TEXT PRIMARY KEY,
    cursor              INTEGER NOT NULL CHECK (cursor >= 0),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,
    last_success_at     TEXT,
    last_error          TEXT,
    last_error_at       TEXT,
    created_at          TEXT NOT NULL
) WITHOUT ROWID;

-- Active tokens whose last import is older than a day are counted at every scrape.
CREATE INDEX tokens_last_import ON tokens(state, last_import_at);
