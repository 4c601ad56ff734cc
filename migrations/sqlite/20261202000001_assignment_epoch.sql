-- The assigner keeps each static study's prompts, responses and showing counts in memory on a SQLite
-- file (server/src/store/assigner_memory.rs) and counts the rater path's own assignments as its writer
-- commits them. Every other change of what that copy holds moves the study's `assign_epoch`, whoever
-- makes it (an import, a flag, an expiry, another process): the next choice sees the epoch changed and
-- reads the study again. The rater path's own writes (an 'issued' assignment, a count up by one) do
-- not move it.
ALTER TABLE studies ADD COLUMN assign_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TRIGGER prompts_epoch_insert AFTER INSERT ON prompts
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id = NEW.study_id;
END;

CREATE TRIGGER prompts_epoch_delete AFTER DELETE ON prompts
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id = OLD.study_id;
END;

CREATE TRIGGER prompts_epoch_update AFTER UPDATE OF study_id, check_kind, identity_flagged, times_assigned ON prompts
WHEN NEW.study_id IS NOT OLD.study_id OR NEW.check_kind IS NOT OLD.check_kind
    OR NEW.identity_flagged IS NOT OLD.identity_flagged
    OR NEW.times_assigned IS NOT OLD.times_assigned + 1
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id IN (OLD.study_id, NEW.study_id);
END;

CREATE TRIGGER responses_epoch_insert AFTER INSERT ON responses
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id = (SELECT study_id FROM prompts WHERE id = NEW.prompt_id);
END;

CREATE TRIGGER responses_epoch_delete AFTER DELETE ON responses
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id = (SELECT study_id FROM prompts WHERE id = OLD.prompt_id);
END;

CREATE TRIGGER responses_epoch_update AFTER UPDATE OF prompt_id, model_id ON responses
WHEN NEW.prompt_id IS NOT OLD.prompt_id OR NEW.model_id IS NOT OLD.model_id
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id IN (SELECT study_id FROM prompts WHERE id IN (OLD.prompt_id, NEW.prompt_id));
END;

-- An assignment written other than by the rater path (an import of votes) or removed (an expiry).
CREATE TRIGGER assignments_epoch_insert AFTER INSERT ON assignments
WHEN NEW.state <> 'issued'
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id = (SELECT study_id FROM raters WHERE id = NEW.rater_id);
END;

CREATE TRIGGER assignments_epoch_delete AFTER DELETE ON assignments
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id = (SELECT study_id FROM raters WHERE id = OLD.rater_id);
END;

CREATE TRIGGER assignments_epoch_update AFTER UPDATE OF rater_id, prompt_id ON assignments
WHEN NEW.rater_id IS NOT OLD.rater_id OR NEW.prompt_id IS NOT OLD.prompt_id
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1
    WHERE id IN (SELECT study_id FROM raters WHERE id IN (OLD.rater_id, NEW.rater_id));
END;

-- A pair's count moved other than up by one for a new regular comparison.
CREATE TRIGGER pair_counts_epoch_insert AFTER INSERT ON pair_counts
WHEN NEW.shown <> 1
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id = NEW.study_id;
END;

CREATE TRIGGER pair_counts_epoch_update AFTER UPDATE ON pair_counts
WHEN NEW.shown IS NOT OLD.shown + 1 OR NEW.study_id IS NOT OLD.study_id
    OR NEW.model_low IS NOT OLD.model_low OR NEW.model_high IS NOT OLD.model_high
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id IN (OLD.study_id, NEW.study_id);
END;

CREATE TRIGGER pair_counts_epoch_delete AFTER DELETE ON pair_counts
BEGIN
    UPDATE studies SET assign_epoch = assign_epoch + 1 WHERE id = OLD.study_id;
END;
