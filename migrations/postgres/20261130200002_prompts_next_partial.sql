-- The next prompt for a rater is read in the order (times_assigned, id) among a study's regular prompts
-- (`check_kind IS NULL`) or its quality checks (`IS NOT NULL`). PostgreSQL does not take `IS NULL` as
-- fixing an index column, so `prompts_assignable (study_id, check_kind, times_assigned, id, …)` gave
-- no order: every candidate query read and sorted all the study's prompts (7 ms at 1,000 prompts
-- before statistics existed, 2.7 ms after, growing with the study). One partial index per kind gives
-- the order, and the query stops after its first few prompts (0.14 ms at 1,000). SQLite's planner
-- does take `IS NULL` as fixed; its index stays.
DROP INDEX prompts_assignable;
CREATE INDEX prompts_next_regular ON prompts (study_id, times_assigned, id)
    INCLUDE (identity_flagged) WHERE check_kind IS NULL;
CREATE INDEX prompts_next_check ON prompts (study_id, times_assigned, id)
    INCLUDE (identity_flagged, check_kind, check_model_id) WHERE check_kind IS NOT NULL;
