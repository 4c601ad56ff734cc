-- A rater's next comparison reads the responses of its candidate prompts, each prompt's response ids
-- and model ids (about 50 rows per new comparison). With the index on `prompt_id` alone every row
-- was a seek into the table, whose rows carry the response text: pages read anew after each commit
-- on a busy study. This index holds both columns (the row id comes with every SQLite index), so that
-- read never touches the table; it replaces the old one, of which it is an extension.
CREATE INDEX responses_prompt_model ON responses (prompt_id, model_id);
DROP INDEX responses_prompt;
