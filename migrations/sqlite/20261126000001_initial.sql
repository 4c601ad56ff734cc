-- Moat's data model (see DESIGN.md). Times are milliseconds since the Unix epoch (BIGINT) so the
-- SQLite and PostgreSQL schemas share one set of queries.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    instructions TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'closed')),
    settings TEXT NOT NULL DEFAULT '{}',
    created_ms BIGINT NOT NULL
);

CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id BIGINT NOT NULL REFERENCES studies(id),
    name TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    openness TEXT NOT NULL CHECK (openness IN ('open', 'closed')),
    version TEXT NOT NULL DEFAULT '',
    UNIQUE (study_id, name)
);

CREATE TABLE prompts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id BIGINT NOT NULL REFERENCES studies(id),
    external_id TEXT NOT NULL,
    conversation TEXT NOT NULL,
    category TEXT,
    language TEXT,
    times_assigned BIGINT NOT NULL DEFAULT 0,
    UNIQUE (study_id, external_id)
);
CREATE INDEX prompts_assignable ON prompts (study_id, times_assigned, id);

CREATE TABLE responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    model_id BIGINT NOT NULL REFERENCES models(id),
    content TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
-- No UNIQUE (prompt_id, model_id): imported datasets (OpenAssistant) hold several replies of one
-- author class ("human") to one prompt. Moat's own import format keys responses by model name.
CREATE INDEX responses_prompt ON responses (prompt_id);

CREATE TABLE raters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id BIGINT NOT NULL REFERENCES studies(id),
    external_id TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    pseudonym TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    created_ms BIGINT NOT NULL
);
CREATE INDEX raters_external ON raters (study_id, external_id);

CREATE TABLE assignments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    rater_id BIGINT NOT NULL REFERENCES raters(id),
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    left_response_id BIGINT NOT NULL REFERENCES responses(id),
    right_response_id BIGINT NOT NULL REFERENCES responses(id),
    model_low BIGINT NOT NULL,
    model_high BIGINT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'regular',
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    state TEXT NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'voted', 'done'))
);
-- A rater sees a prompt at most once; imported votes (kind 'imported') may hold several pairs of one
-- prompt by one annotator, as OpenAssistant's rankings do.
CREATE UNIQUE INDEX assignments_once ON assignments (rater_id, prompt_id) WHERE kind <> 'imported';
-- The partial index above serves only queries that say `kind <> 'imported'`; lookups by rater use this.
CREATE INDEX assignments_rater ON assignments (rater_id, prompt_id);
CREATE INDEX assignments_pair ON assignments (model_low, model_high);

CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment_id BIGINT NOT NULL UNIQUE REFERENCES assignments(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
    source_guess TEXT,
    source_confidence BIGINT,
    rationale TEXT,
    time_on_page_ms BIGINT,
    created_ms BIGINT NOT NULL
);

-- How often each model pair was shown in a study, kept in step with assignments so that choosing the
-- least-shown pair costs one small read.
CREATE TABLE pair_counts (
    study_id BIGINT NOT NULL REFERENCES studies(id),
    model_low BIGINT NOT NULL,
    model_high BIGINT NOT NULL,
    shown BIGINT NOT NULL,
    PRIMARY KEY (study_id, model_low, model_high)
);
