-- API keys for Moat's OpenAI-compatible endpoint (/v1/*): one per client, named, stored as the SHA-256
-- of the key (the key itself is shown once, when it is created), revocable one by one.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    revoked_ms BIGINT
);
