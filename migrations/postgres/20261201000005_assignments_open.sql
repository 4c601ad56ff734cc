-- A rater's open comparisons (issued, or voted and waiting for their reveal) were found through an
-- index of all of the rater's rows, `assignments_rater_state (rater_id, state, id)`; every vote moved
-- its row's entry from 'issued' to 'done' there, and every new comparison added one: with 64 raters
-- voting, up to 64 leaf pages written per group commit, in an index that grew with every vote. This
-- partial index holds only the open rows, a couple per rater, in a page or two. Queries that use it
-- say `state <> 'done'` literally (SQLite uses a partial index only when its condition appears in
-- the query); lookups by rater alone read `assignments_rater_prompt`.
CREATE INDEX assignments_open ON assignments (rater_id, state, id) WHERE state <> 'done';
DROP INDEX assignments_rater_state;
