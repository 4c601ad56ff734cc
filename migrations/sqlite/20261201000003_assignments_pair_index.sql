-- Every new comparison is a row in `assignments`, written into each of its indexes. One of them served
-- no query: `assignments_pair (model_low, model_high)`; the reports group votes by pair without it,
-- and the assigner reads the pairs' counts from `pair_counts`.
DROP INDEX assignments_pair;
