-- Two indexes on `assignments` held the same (rater_id, prompt_id) keys: `assignments_once`, the unique
-- rule "a rater sees a prompt once" (partial: imported rows may hold several pairs of one prompt by one
-- annotator), and `assignments_rater`, which answered "has this rater been given this prompt?" from
-- the index alone (the partial one could not: a query must say `kind <> 'imported'`, and SQLite then
-- reads each row to check it). One index now does both: unique on (rater, prompt, 0) for every row
-- but imported ones, which add their own id and so never collide. Its first two columns answer the
-- question; each new comparison is written into one index keyed by rater instead of two.
CREATE UNIQUE INDEX assignments_rater_prompt ON assignments
    (rater_id, prompt_id, (CASE WHEN kind = 'imported' THEN id ELSE 0 END));
DROP INDEX assignments_once;
DROP INDEX assignments_rater;
