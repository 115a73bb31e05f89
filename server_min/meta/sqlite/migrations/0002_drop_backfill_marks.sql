-- `stats` held only the mark of a one-time backfill of journal checksums, done by every database that
-- the first release opened; the tables dropped with it were replaced before that release.
DROP TABLE IF EXISTS stats;
DROP TABLE IF EXISTS box_blocks;
DROP TABLE IF EXISTS stage_blocks;
