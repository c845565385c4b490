-- Client keys created at run time (`POST /admin/keys`), next to the YAML `keys:`. Only the
-- secret's sha256 (64 hex digits) is stored. Lists and limits are JSON text, in the shapes of
-- the YAML keys' fields. A revoked key keeps its row (and its name) with `revoked_ms` set.
-- Portable between SQLite and PostgreSQL: times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS client_keys (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL UNIQUE,
    team       TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    models     TEXT NOT NULL DEFAULT '[]',
    budget     TEXT,
    rate_limit TEXT,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
