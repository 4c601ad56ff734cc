-- Rater sessions worth trusting (issue 10):
-- * `origin` says where a rater came from: a live `session` (consent on the study link) or an
--   `imported` dataset's annotator. It used to live in `status`, which exclusion overwrites; an
--   imported annotator can now be excluded and included again and stays unjoinable.
-- * `client_hash`: a keyed digest of the address a session consented from (never the address
--   itself), to cap sessions per address per study.
-- * `completion_code`: the session's own code, shown when it completes and verifiable by the
--   researcher (a code shared on a forum names the one session it belongs to).
-- * `expired_assignments`: how many of the session's comparisons expired unvoted (given back).
ALTER TABLE raters ADD COLUMN origin TEXT NOT NULL DEFAULT 'session';
ALTER TABLE raters ADD COLUMN client_hash TEXT;
ALTER TABLE raters ADD COLUMN completion_code TEXT;
ALTER TABLE raters ADD COLUMN expired_assignments BIGINT NOT NULL DEFAULT 0;
UPDATE raters SET origin = 'imported' WHERE status = 'imported';
CREATE INDEX raters_client ON raters (study_id, client_hash);
CREATE INDEX raters_created ON raters (study_id, created_ms);
CREATE UNIQUE INDEX raters_completion_code ON raters (completion_code);
-- The code relies on one imported rater per annotator name and study: a constraint, so that racing
-- imports cannot make two.
CREATE UNIQUE INDEX raters_imported_once ON raters (study_id, external_id) WHERE origin = 'imported';
-- Issued comparisons that expire (`expires_ms` was in the first schema, unused until now).
CREATE INDEX assignments_expiry ON assignments (expires_ms) WHERE state = 'issued';
