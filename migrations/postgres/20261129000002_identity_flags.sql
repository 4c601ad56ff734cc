-- Identity leaks (server/src/identity.rs): a response that names a model or its maker breaks
-- blindness. `identity_flag` holds the words that matched (NULL when clean), set when a response is
-- written (import, `moat generate`). A prompt with a flagged response is `identity_flagged` and is
-- kept away from raters unless the study's `show_flagged` setting is on; the flag rides at the end of
-- the assignable index, so skipping flagged prompts still reads the index alone.
ALTER TABLE responses ADD COLUMN identity_flag TEXT;
ALTER TABLE prompts ADD COLUMN identity_flagged BIGINT NOT NULL DEFAULT 0;
DROP INDEX prompts_assignable;
CREATE INDEX prompts_assignable ON prompts (study_id, check_kind, times_assigned, id, identity_flagged);
