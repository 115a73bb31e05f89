-- The PostgreSQL schema, table for table the SQLite one (meta/sqlite/migrations), with these choices:
-- * every path, folder and name is COLLATE "C": ordering and the range scans `path >= 'd/' AND path < 'd0'`
--   then compare bytes, as SQLite does, whatever the database's own collation is;
-- * digests are BYTEA, ids BIGINT (BIGSERIAL where the database hands them out), times DOUBLE PRECISION
--   (seconds since the epoch, as the SQLite schema's REAL), flags BOOLEAN;
-- * the journal has no content_hash column (SQLite's always holds ''), and blocks.offset is pack_offset
--   (OFFSET is reserved in PostgreSQL);
-- * SQLite's indexes, plus four on columns that its queries look up by (devices and members of a user,
--   tokens of a device, stages by age): PostgreSQL does not index a foreign key by itself.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY, name TEXT COLLATE "C" NOT NULL UNIQUE, password_hash TEXT,
    created DOUBLE PRECISION NOT NULL);
CREATE TABLE devices (
    id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id), name TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION,
    revoked BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX devices_user ON devices (user_id);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id), device_id BIGINT,
    created DOUBLE PRECISION NOT NULL, revoked BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX tokens_device ON tokens (device_id) WHERE device_id IS NOT NULL;
CREATE TABLE boxes (
    id BIGSERIAL PRIMARY KEY, owner_id BIGINT NOT NULL REFERENCES users(id), name TEXT COLLATE "C" NOT NULL,
    min_size BIGINT NOT NULL, avg_size BIGINT NOT NULL, max_size BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL, head BIGINT NOT NULL DEFAULT 0, UNIQUE (owner_id, name));
CREATE TABLE members (
    box_id BIGINT NOT NULL REFERENCES boxes(id), user_id BIGINT NOT NULL REFERENCES users(id),
    prefix TEXT COLLATE "C" NOT NULL DEFAULT '', role TEXT NOT NULL, PRIMARY KEY (box_id, user_id, prefix));
CREATE INDEX members_user ON members (user_id);
CREATE TABLE device_cursors (
    device_id BIGINT NOT NULL, box_id BIGINT NOT NULL, cursor BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, box_id));
CREATE TABLE commits (
    box_id BIGINT NOT NULL, seq BIGINT NOT NULL, user_id BIGINT NOT NULL, device_id BIGINT,
    message TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, nchanges BIGINT NOT NULL, key TEXT,
    PRIMARY KEY (box_id, seq));
CREATE INDEX commits_time ON commits (box_id, time);
CREATE UNIQUE INDEX commits_key ON commits (box_id, key) WHERE key IS NOT NULL;
CREATE TABLE journal (
    box_id BIGINT NOT NULL, seq BIGINT NOT NULL, path TEXT COLLATE "C" NOT NULL, op TEXT NOT NULL,
    kind TEXT NOT NULL, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, mode INTEGER NOT NULL,
    blocks BYTEA NOT NULL, target TEXT, checksum BYTEA,
    PRIMARY KEY (box_id, seq, path));
CREATE INDEX journal_path ON journal (box_id, path, seq);
CREATE TABLE files (
    box_id BIGINT NOT NULL, path TEXT COLLATE "C" NOT NULL, rev BIGINT NOT NULL, present BOOLEAN NOT NULL,
    PRIMARY KEY (box_id, path));
CREATE TABLE blocks (
    sha256 BYTEA PRIMARY KEY, size BIGINT NOT NULL, stored_size BIGINT NOT NULL, codec INTEGER NOT NULL,
    pack TEXT NOT NULL, pack_offset BIGINT NOT NULL);
CREATE TABLE uploads (
    user_id BIGINT NOT NULL, sha256 BYTEA NOT NULL, PRIMARY KEY (user_id, sha256));
-- Which paths of a box ever referenced a block: a box member reads a block only through a path of the box,
-- a folder member only through a path under its folder.
CREATE TABLE block_paths (
    sha256 BYTEA NOT NULL, box_id BIGINT NOT NULL, path TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sha256, box_id, path));
-- Blocks found damaged in the store: reported missing to uploaders until a fresh upload replaces them.
CREATE TABLE damaged (
    sha256 BYTEA PRIMARY KEY, found DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL);
-- A commit staged in parts: checked changes wait here, seen by no reader, until one commit applies them
-- all or the stage expires. Stages live in tables, not in a process: any server process may take the
-- next part. A sequence never hands out an id twice, so an expired stage's id is never reused.
CREATE TABLE stages (
    id BIGSERIAL PRIMARY KEY, box_id BIGINT NOT NULL REFERENCES boxes(id),
    user_id BIGINT NOT NULL REFERENCES users(id), created DOUBLE PRECISION NOT NULL);
CREATE INDEX stages_created ON stages (created);
CREATE TABLE stage_changes (
    stage BIGINT NOT NULL, path TEXT COLLATE "C" NOT NULL, op TEXT NOT NULL, kind TEXT NOT NULL,
    size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, mode INTEGER NOT NULL, blocks BYTEA NOT NULL, target TEXT,
    parent_rev BIGINT NOT NULL, PRIMARY KEY (stage, path));
-- The folders holding a stage's puts ('' for the top). `leaves`: it holds puts of files or links.
CREATE TABLE stage_folders (
    stage BIGINT NOT NULL, folder TEXT COLLATE "C" NOT NULL, leaves BOOLEAN NOT NULL,
    PRIMARY KEY (stage, folder));
CREATE TABLE links (
    id BIGSERIAL PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, box_id BIGINT NOT NULL REFERENCES boxes(id),
    path TEXT COLLATE "C" NOT NULL, user_id BIGINT NOT NULL REFERENCES users(id),
    created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, revoked DOUBLE PRECISION);
CREATE INDEX links_box ON links (box_id);
CREATE INDEX links_user ON links (user_id);
