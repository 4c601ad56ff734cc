-- Quality-check items (attention checks and gold items): a prompt with a known better response.
-- Check prompts are shown to raters at the study's check rate and are never regular items: their votes
-- score the rater (passed when the rater picks the response of `check_model_id`) and stay out of the
-- leaderboard and the preference exports. Assignments of such prompts have the kind of the check.
ALTER TABLE prompts ADD COLUMN check_kind TEXT CHECK (check_kind IN ('attention', 'gold'));
ALTER TABLE prompts ADD COLUMN check_model_id BIGINT REFERENCES models(id);
