-- The schema of the first release (the database every server before numbered migrations made).
-- IF NOT EXISTS throughout: a database from that release, whose user_version is 0, is adopted as it is.
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, created REAL NOT NULL, last_seen REAL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), device_id INTEGER,
    created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS boxes (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL REFERENCES users(id), name TEXT NOT NULL,
    min_size INTEGER NOT NULL, avg_size INTEGER NOT NULL, max_size INTEGER NOT NULL,
    created REAL NOT NULL, head INTEGER NOT NULL DEFAULT 0, UNIQUE (owner_id, name));
CREATE TABLE IF NOT EXISTS members (
    box_id INTEGER NOT NULL REFERENCES boxes(id), user_id INTEGER NOT NULL REFERENCES users(id),
    prefix TEXT NOT NULL DEFAULT '', role TEXT NOT NULL, PRIMARY KEY (box_id, user_id, prefix));
CREATE TABLE IF NOT EXISTS device_cursors (
    device_id INTEGER NOT NULL, box_id INTEGER NOT NULL, cursor INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (device_id, box_id));
CREATE TABLE IF NOT EXISTS commits (
    box_id INTEGER NOT NULL, seq INTEGER NOT NULL, user_id INTEGER NOT NULL, device_id INTEGER,
    message TEXT NOT NULL, time REAL NOT NULL, nchanges INTEGER NOT NULL, key TEXT, PRIMARY KEY (box_id, seq));
CREATE INDEX IF NOT EXISTS commits_time ON commits (box_id, time);
CREATE UNIQUE INDEX IF NOT EXISTS commits_key ON commits (box_id, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS journal (
    box_id INTEGER NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, op TEXT NOT NULL,
    kind TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
    blocks BLOB NOT NULL, content_hash TEXT NOT NULL, target TEXT, checksum BLOB,
    PRIMARY KEY (box_id, seq, path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS journal_path ON journal (box_id, path, seq);
CREATE TABLE IF NOT EXISTS files (
    box_id INTEGER NOT NULL, path TEXT NOT NULL, rev INTEGER NOT NULL, present INTEGER NOT NULL,
    PRIMARY KEY (box_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    sha256 BLOB PRIMARY KEY, size INTEGER NOT NULL, stored_size INTEGER NOT NULL, codec INTEGER NOT NULL,
    pack TEXT NOT NULL, offset INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    user_id INTEGER NOT NULL, sha256 BLOB NOT NULL, PRIMARY KEY (user_id, sha256)) WITHOUT ROWID;
-- Which paths of a box ever referenced a block: a box member reads a block only through a path of the box,
-- a folder member only through a path under its folder.
CREATE TABLE IF NOT EXISTS block_paths (
    sha256 BLOB NOT NULL, box_id INTEGER NOT NULL, path TEXT NOT NULL,
    PRIMARY KEY (sha256, box_id, path)) WITHOUT ROWID;
-- Blocks found damaged in the store (bad hash, bad zstd, pack cut short or gone): reported missing to
-- uploaders until a fresh upload replaces them.
CREATE TABLE IF NOT EXISTS damaged (
    sha256 BLOB PRIMARY KEY, found REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- A commit staged in parts (a push too large for one request, or sent while its blocks upload): checked
-- changes wait here, seen by no reader, until one commit applies them all or the stage expires.
-- AUTOINCREMENT: an expired stage's id is never given to a new one.
CREATE TABLE IF NOT EXISTS stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, box_id INTEGER NOT NULL REFERENCES boxes(id),
    user_id INTEGER NOT NULL REFERENCES users(id), created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stage_changes (
    stage INTEGER NOT NULL, path TEXT NOT NULL, op TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL, blocks BLOB NOT NULL, target TEXT,
    parent_rev INTEGER NOT NULL, PRIMARY KEY (stage, path)) WITHOUT ROWID;
-- The folders holding a stage's puts ('' for the top), noted as the parts arrive: the commit checks that
-- none of them is a file without reading every staged path again. `leaves`: it holds puts of files or links.
CREATE TABLE IF NOT EXISTS stage_folders (
    stage INTEGER NOT NULL, folder TEXT NOT NULL, leaves INTEGER NOT NULL,
    PRIMARY KEY (stage, folder)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (
    id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, box_id INTEGER NOT NULL REFERENCES boxes(id),
    path TEXT NOT NULL, user_id INTEGER NOT NULL REFERENCES users(id), created REAL NOT NULL,
    expires REAL, revoked REAL);
CREATE INDEX IF NOT EXISTS links_box ON links (box_id);
CREATE INDEX IF NOT EXISTS links_user ON links (user_id);
