-- One row per chat request (see router/src/usage/). Portable between SQLite and PostgreSQL:
-- times are Unix milliseconds, booleans 0/1, money USD as double precision.
CREATE TABLE IF NOT EXISTS usage_records (
    id                 TEXT PRIMARY KEY,
    ts_ms              BIGINT NOT NULL,
    request_id         TEXT NOT NULL,
    key_name           TEXT,
    team               TEXT,
    requested_model    TEXT NOT NULL,
    target             TEXT,
    strategy           TEXT,
    category           TEXT,
    score              DOUBLE PRECISION,
    reason             TEXT,
    backend            TEXT,
    upstream_model     TEXT,
    is_local           BIGINT NOT NULL DEFAULT 0,
    stream             BIGINT NOT NULL DEFAULT 0,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
    counterfactual_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_ms         DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_ms            DOUBLE PRECISION,
    cache              TEXT,
    status             BIGINT NOT NULL,
    error_class        TEXT
);
CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts_ms);
CREATE INDEX IF NOT EXISTS usage_records_key_ts ON usage_records (key_name, ts_ms);
