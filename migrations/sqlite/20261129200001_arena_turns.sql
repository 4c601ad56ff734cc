-- Multi-turn arena battles (issue 12): a rater may ask both models follow-up questions before voting.
--
-- responses.history: for an answer in a multi-turn battle, this side's messages between the prompt's
-- conversation (the rater's first turn) and `content` (its last answer): its earlier answers and the
-- rater's follow-ups, as JSON `[{role, content}]`. NULL for a single answer (every other response).
ALTER TABLE responses ADD COLUMN history TEXT;
-- arena_battles.turns: how many turns (the first prompt and each follow-up) the battle has answered.
ALTER TABLE arena_battles ADD COLUMN turns BIGINT NOT NULL DEFAULT 1;
