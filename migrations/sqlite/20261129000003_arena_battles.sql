-- Live-arena battles: a rater's own prompt answered by two registry models. A battle row is written
-- when it starts, so a crash mid-stream leaves a 'streaming' row that nothing counts. When both answers
-- are complete, the battle becomes ordinary rows (a prompt with the conversation, two responses with
-- their generation metadata, an issued assignment) and 'complete'; the vote is an ordinary vote. A
-- battle in which a model failed, timed out or was cancelled is 'void', kept with its error for the
-- researcher and never counted.
CREATE TABLE arena_battles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    study_id BIGINT NOT NULL REFERENCES studies(id),
    rater_id BIGINT NOT NULL REFERENCES raters(id),
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    conversation TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'streaming' CHECK (state IN ('streaming', 'complete', 'void')),
    error TEXT,
    prompt_id BIGINT REFERENCES prompts(id),
    assignment_id BIGINT REFERENCES assignments(id),
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX arena_battles_rater ON arena_battles (rater_id, created_ms);
CREATE INDEX arena_battles_study ON arena_battles (study_id, state);
