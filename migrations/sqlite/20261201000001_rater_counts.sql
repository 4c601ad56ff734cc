-- Each rater's number of comparisons (`assigned`) and of answered ones (`answered`: voted, done or
-- imported), kept by triggers on every insert, delete and change of state of an assignment, whatever
-- path writes it. The rater path read them as COUNT(*) over the rater's assignments at every request
-- (the session's vote count) and at every new comparison (the `items_per_rater` check): work that grew
-- with the session, a long arena session or a benchmark rater paying it on every page. Backfilled from
-- the rows, so an existing database upgrades with its counts exact.
ALTER TABLE raters ADD COLUMN assigned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE raters ADD COLUMN answered BIGINT NOT NULL DEFAULT 0;
UPDATE raters SET
    assigned = (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = raters.id),
    answered = (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = raters.id AND a.state <> 'issued');
CREATE TRIGGER assignments_counted_insert AFTER INSERT ON assignments
BEGIN
    UPDATE raters SET assigned = assigned + 1, answered = answered + (NEW.state <> 'issued')
    WHERE id = NEW.rater_id;
END;
CREATE TRIGGER assignments_counted_delete AFTER DELETE ON assignments
BEGIN
    UPDATE raters SET assigned = assigned - 1, answered = answered - (OLD.state <> 'issued')
    WHERE id = OLD.rater_id;
END;
CREATE TRIGGER assignments_counted_state AFTER UPDATE OF state ON assignments
WHEN (OLD.state <> 'issued') <> (NEW.state <> 'issued')
BEGIN
    UPDATE raters SET answered = answered + (NEW.state <> 'issued') - (OLD.state <> 'issued')
    WHERE id = NEW.rater_id;
END;
