-- The admin area's people, sessions and audit log (issue 10).
--
-- admin_tokens: one token per person, named, with a role (owner, researcher, viewer), stored as the
-- SHA-256 of the token (the token itself is shown once), revocable one by one. The configured admin
-- token (`--admin-token`) is the owner's bootstrap and is not a row here.
CREATE TABLE admin_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'researcher', 'viewer')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    revoked_ms BIGINT
);

-- The studies a researcher (or a restricted viewer) may work on: given by the owner, or created by them.
CREATE TABLE admin_token_studies (
    token_id BIGINT NOT NULL REFERENCES admin_tokens(id),
    study_id BIGINT NOT NULL REFERENCES studies(id),
    PRIMARY KEY (token_id, study_id)
);

-- A browser's login: the cookie holds a random id, only its SHA-256 is stored. token_id is NULL for
-- the bootstrap owner, whose session is bound to the digest of the token it logged in with (a new
-- --admin-token ends those sessions).
CREATE TABLE admin_sessions (
    id_sha256 TEXT PRIMARY KEY,
    token_id BIGINT REFERENCES admin_tokens(id),
    credential_sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX admin_sessions_token ON admin_sessions (token_id);

-- Who did what when in the admin area. actor is a token's name ('owner' for the bootstrap token,
-- 'cli' for the command line, '-' for a failed login); nothing secret is ever written here.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
