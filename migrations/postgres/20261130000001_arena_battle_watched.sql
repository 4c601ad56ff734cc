-- Several server processes on one database (issue 13): a battle runs in the process that took the
-- prompt, while its event stream may be served by another.
--
-- arena_battles.alive_ms: while it runs, the running process notes here every few seconds that it
-- is still at it, so another process can tell a battle running elsewhere from one whose process
-- died (which never ends by itself). NULL on SQLite, which one process serves.
ALTER TABLE arena_battles ADD COLUMN alive_ms BIGINT;
-- arena_battles.watched_ms: the other process notes here, every few seconds, that the rater is still
-- watching, so the running process does not end the battle as abandoned. NULL when the battle was
-- only ever watched in its own process.
ALTER TABLE arena_battles ADD COLUMN watched_ms BIGINT;
