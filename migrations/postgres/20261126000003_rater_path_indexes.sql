-- Indexes for the rater's hot path (measured with `moat bench votes`, see BENCHMARKS.md):
-- the next regular prompt is read off the index in order, without visiting the table for `check_kind`;
-- a rater's open assignment and vote count are read off (rater, state) instead of every assignment of
-- the rater.
DROP INDEX prompts_assignable;
CREATE INDEX prompts_assignable ON prompts (study_id, check_kind, times_assigned, id);
CREATE INDEX assignments_rater_state ON assignments (rater_id, state, id);
