-- Kontomatik's analytical scores per owner (AISD_ANALYTICS=scores), the latest per model.
-- Deleted with the owner (owner.forget) through the cascade.
CREATE TABLE owner_scores (
    owner_id        INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    model_id        TEXT NOT NULL,
    retrained_at    TEXT,
    score           REAL,
    percentile      REAL,
    tier            TEXT,
    import_id       TEXT,  -- the import after which they were fetched
    fetched_at      TEXT NOT NULL,
    PRIMARY KEY (owner_id, model_id)
);
