-- A rater's next comparison reads the responses of its candidate prompts, each prompt's response ids
-- and model ids (about 50 rows per new comparison). With the index on `prompt_id` alone every row
-- was a visit to the table, whose rows carry the response text. This index holds the columns read,
-- so the read can be answered from the index; it replaces the old one, of which it is an extension.
CREATE INDEX responses_prompt_model ON responses (prompt_id, model_id) INCLUDE (id);
DROP INDEX responses_prompt;
