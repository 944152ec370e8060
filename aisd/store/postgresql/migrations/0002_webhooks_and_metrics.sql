-- 0002_webhooks_and_metrics: as the SQLite backend's migration of the same name. A delivery
-- cursor per webhook endpoint (advanced by compare-and-set, so daemons sharing the database
-- never deliver past each other), and an index for the stale-token gauge of /metrics.
CREATE TABLE webhook_endpoints (
    url                 text PRIMARY KEY,
    cursor              bigint NOT NULL CHECK (cursor >= 0),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     text,
    last_success_at     text,
    last_error          text,
    last_error_at       text,
    created_at          text NOT NULL
);

CREATE INDEX tokens_last_import ON tokens(state, last_import_at);
