-- Each rater's number of comparisons (`assigned`) and of answered ones (`answered`: voted, done or
-- imported), kept by a trigger on every insert, delete and change of state of an assignment, whatever
-- path writes it. The rater path read them as COUNT(*) over the rater's assignments at every request
-- (the session's vote count) and at every new comparison (the `items_per_rater` check): work that grew
-- with the session, a long arena session or a benchmark rater paying it on every page. Backfilled from
-- the rows, so an existing database upgrades with its counts exact. The rater path already holds the
-- rater's row lock when it writes an assignment, so the trigger's update waits on nothing new.
ALTER TABLE raters ADD COLUMN assigned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE raters ADD COLUMN answered BIGINT NOT NULL DEFAULT 0;
UPDATE raters r SET assigned = c.assigned, answered = c.answered
FROM (
    SELECT rater_id, COUNT(*) AS assigned, COUNT(*) FILTER (WHERE state <> 'issued') AS answered
    FROM assignments GROUP BY rater_id
) c
WHERE r.id = c.rater_id;
CREATE FUNCTION assignments_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE raters SET assigned = assigned + 1,
            answered = answered + (NEW.state <> 'issued')::int
        WHERE id = NEW.rater_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE raters SET assigned = assigned - 1,
            answered = answered - (OLD.state <> 'issued')::int
        WHERE id = OLD.rater_id;
    ELSIF (OLD.state <> 'issued') <> (NEW.state <> 'issued') THEN
        UPDATE raters SET answered = answered + (NEW.state <> 'issued')::int - (OLD.state <> 'issued')::int
        WHERE id = NEW.rater_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER assignments_counted AFTER INSERT OR DELETE OR UPDATE OF state ON assignments
    FOR EACH ROW EXECUTE FUNCTION assignments_counted();
