-- A model pair's shown count may be split over several rows ("shards"), summed when read. On
-- PostgreSQL every new comparison of a pair used to increment the same row, so concurrent raters' transactions
-- queued behind that row's lock, one commit (and one fsync) at a time, even across server processes.
-- There an assignment now increments one of several shards of its pair. SQLite's single writer has no
-- such queue, so it keeps writing shard 0. SQLite cannot change a primary key in place: the table is
-- copied.
CREATE TABLE pair_counts_sharded (
    study_id BIGINT NOT NULL REFERENCES studies(id),
    model_low BIGINT NOT NULL,
    model_high BIGINT NOT NULL,
    shard INTEGER NOT NULL DEFAULT 0,
    shown BIGINT NOT NULL,
    PRIMARY KEY (study_id, model_low, model_high, shard)
);
INSERT INTO pair_counts_sharded (study_id, model_low, model_high, shard, shown)
    SELECT study_id, model_low, model_high, 0, shown FROM pair_counts;
DROP TABLE pair_counts;
ALTER TABLE pair_counts_sharded RENAME TO pair_counts;
