-- A model pair's shown count may be split over several rows ("shards"), summed when read. Every new
-- comparison of a pair used to increment the same row, so concurrent raters' transactions queued
-- behind that row's lock, one commit (and one fsync) at a time, even across server processes. An
-- assignment now increments one of several shards of its pair; the existing counts become shard 0.
ALTER TABLE pair_counts ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pair_counts DROP CONSTRAINT pair_counts_pkey;
ALTER TABLE pair_counts ADD PRIMARY KEY (study_id, model_low, model_high, shard);
