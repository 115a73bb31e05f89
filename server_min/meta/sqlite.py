"""The default metadata store: one SQLite database in WAL mode, every write in one transaction."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from box_common.sqlite_rows import insert_rows
from server_min.integrity import entry_checksum, is_corrupt, register

log = logging.getLogger("server_min")

SCHEMA = """
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
"""

# A WAL larger than this after a write is checkpointed and truncated (it would otherwise keep up to 4 MiB).
WAL_TRIM_BYTES = 256 << 10

# A stage not committed within this many seconds is dropped (its client gave up or died).
STAGE_TTL = 24 * 3600

# SQLite's limit on bound variables is far higher, but small batches keep each statement cheap.
BATCH = 500
BIG_BATCH = 5000  # for lookups of plain columns, where fewer statements matter more


def batched(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """Slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _blocks_by_path(entries: Iterable[Mapping[str, Any]]) -> list[tuple[bytes, str]]:
    """(block, path) for every block of `entries`, in key order: B-tree inserts then walk the index
    once instead of jumping around it."""
    return sorted((e["blocks"][i : i + 32], e["path"]) for e in entries for i in range(0, len(e["blocks"]), 32))


class SqliteMeta:
    """Metadata in one SQLite file; one connection per thread, writes serialised by SQLite itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writing = threading.RLock()
        self.conn.executescript(SCHEMA)
        try:
            self._backfill_block_paths()
            self._backfill_checksums()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            # A damaged database still serves what it can: each read that meets the damage answers
            # Damaged, and 'boxctl admin check' says where it is.
            log.error("meta.db is damaged (%s): run 'boxctl admin check --data %s'", exc, path.parent)
        # box_blocks (box, block) was block_paths without the path: dropped, block_paths answers the same.
        self.conn.execute("DROP TABLE IF EXISTS box_blocks")
        # stage_blocks (stage, block, path) was filled while staging; the commit now reads the staged changes.
        self.conn.execute("DROP TABLE IF EXISTS stage_blocks")

    def _backfill_block_paths(self) -> None:
        """Fill block_paths from the journal once, for a database made before that table existed."""
        conn = self.conn
        if conn.execute("SELECT 1 FROM block_paths LIMIT 1").fetchone() is not None:
            return
        if conn.execute("SELECT 1 FROM journal WHERE length(blocks) > 0 LIMIT 1").fetchone() is None:
            return
        with self.write() as conn:
            for row in conn.execute("SELECT box_id, path, blocks FROM journal WHERE length(blocks) > 0").fetchall():
                blob = bytes(row["blocks"])
                conn.executemany(
                    "INSERT OR IGNORE INTO block_paths (sha256, box_id, path) VALUES (?, ?, ?)",
                    ((blob[i : i + 32], row["box_id"], row["path"]) for i in range(0, len(blob), 32)),
                )

    def _backfill_checksums(self) -> None:
        """Give every journal entry its checksum, for a database made before entries carried one."""
        # Done once (a mark in stats): looking for rows without one would read the whole journal at each start.
        if self.conn.execute("SELECT 1 FROM stats WHERE name = 'journal_checksums'").fetchone() is not None:
            return
        columns = {r["name"] for r in self.conn.execute("PRAGMA table_info(journal)")}
        with self.write() as conn:
            if "checksum" not in columns:
                conn.execute("ALTER TABLE journal ADD COLUMN checksum BLOB")
            conn.execute("UPDATE journal SET checksum = box_checksum(box_id, seq, path, op, kind, size, mtime_ns, "
                         "mode, blocks, target) WHERE checksum IS NULL")
            conn.execute("INSERT OR REPLACE INTO stats (name, value) VALUES ('journal_checksums', 1)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL makes every commit durable before the client hears it is done (rule 1).
        conn.execute("PRAGMA synchronous=FULL")
        # After a checkpoint, shrink the WAL file back to 4 MiB instead of keeping its largest size.
        conn.execute("PRAGMA journal_size_limit=4194304")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        register(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on any error."""
        conn = self.conn
        # Writers of this process queue here and take turns at once; SQLite's own busy wait (for other
        # processes) sleeps in steps of 1-100 ms, which oversleeps by tens of ms under load.
        with self._writing:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._trim_wal(conn)

    def _trim_wal(self, conn: sqlite3.Connection) -> None:
        """Fold a large WAL back into the database and empty it, so the disk holds each page once.

        Only when no reader is in the way: with a busy timeout of 0 the checkpoint gives up at once
        (the regular auto-checkpoint still runs later); a write never waits for it.
        """
        try:
            if self.path.with_name(self.path.name + "-wal").stat().st_size <= WAL_TRIM_BYTES:
                return
        except OSError:
            return
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            pass  # busy: a reader holds an old snapshot; the next large write tries again
        finally:
            conn.execute("PRAGMA busy_timeout=60000")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for every query inside it."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # --- users, devices, tokens -------------------------------------------------------------

    def add_user(self, name: str, token_hash: str) -> int:
        with self.write() as conn:
            cur = conn.execute("INSERT INTO users (name, created) VALUES (?, ?)", (name, time.time()))
            user_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO tokens (hash, user_id, created) VALUES (?, ?, ?)", (token_hash, user_id, time.time())
            )
            return user_id

    def user_by_name(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()

    def token(self, token_hash: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT t.user_id, t.device_id, t.revoked, u.name FROM tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.hash = ?",
            (token_hash,),
        ).fetchone()

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        """Record a device and its own token in one transaction."""
        with self.write() as conn:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO devices (user_id, name, kind, created, last_seen) VALUES (?, ?, ?, ?, ?)",
                (user_id, name, kind, now, now),
            )
            device_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO tokens (hash, user_id, device_id, created) VALUES (?, ?, ?, ?)",
                (token_hash, user_id, device_id, now),
            )
            return device_id

    def revoke_device(self, user_id: int, device_id: int) -> None:
        """Revoke a device and every token bound to it, at once."""
        with self.write() as conn:
            conn.execute("UPDATE devices SET revoked = 1 WHERE id = ? AND user_id = ?", (device_id, user_id))
            conn.execute("UPDATE tokens SET revoked = 1 WHERE device_id = ? AND user_id = ?", (device_id, user_id))

    def device_cursors(self, device_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT dc.box_id, dc.cursor, dc.updated, b.name AS box, b.head FROM device_cursors dc "
            "JOIN boxes b ON b.id = dc.box_id WHERE dc.device_id = ? ORDER BY dc.box_id",
            (device_id,),
        ).fetchall()

    def device(self, device_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()

    def devices(self, user_id: int) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM devices WHERE user_id = ? ORDER BY id", (user_id,)).fetchall()

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None) -> None:
        with self.write() as conn:
            now = time.time()
            conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device_id))
            if box_id is not None and cursor is not None:
                conn.execute(
                    "INSERT INTO device_cursors (device_id, box_id, cursor, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (device_id, box_id) DO UPDATE SET cursor = MAX(cursor, excluded.cursor), "
                    "updated = excluded.updated",
                    (device_id, box_id, cursor, now),
                )

    # --- boxes and members ------------------------------------------------------------------

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO boxes (owner_id, name, min_size, avg_size, max_size, created) VALUES (?, ?, ?, ?, ?, ?)",
                (owner_id, name, *sizes, time.time()),
            )
            box_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO members (box_id, user_id, prefix, role) VALUES (?, ?, '', 'owner')", (box_id, owner_id)
            )
            return box_id

    def box_by_name(self, owner_id: int, name: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT b.*, u.name AS owner FROM boxes b JOIN users u ON u.id = b.owner_id "
            "WHERE b.owner_id = ? AND b.name = ?",
            (owner_id, name),
        ).fetchone()

    def box(self, box_id: int) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT b.*, u.name AS owner FROM boxes b JOIN users u ON u.id = b.owner_id WHERE b.id = ?", (box_id,)
        ).fetchone()

    def memberships(self, box_id: int, user_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT prefix, role FROM members WHERE box_id = ? AND user_id = ?", (box_id, user_id)
        ).fetchall()

    def boxes_of(self, user_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT b.*, u.name AS owner, m.role, m.prefix FROM members m JOIN boxes b ON b.id = m.box_id "
            "JOIN users u ON u.id = b.owner_id WHERE m.user_id = ? ORDER BY b.id",
            (user_id,),
        ).fetchall()

    def head(self, box_id: int) -> int:
        row = self.conn.execute("SELECT head FROM boxes WHERE id = ?", (box_id,)).fetchone()
        return int(row["head"]) if row else 0

    # --- blocks -----------------------------------------------------------------------------

    def existing_blocks(self, conn: sqlite3.Connection, digests: Sequence[bytes]) -> dict[bytes, sqlite3.Row]:
        """The rows of those `digests` the block store holds."""
        found: dict[bytes, sqlite3.Row] = {}
        for part in batched(digests):
            marks = ",".join("?" * len(part))
            for row in conn.execute(f"SELECT * FROM blocks WHERE sha256 IN ({marks})", part):
                found[bytes(row["sha256"])] = row
        return found

    def block_sizes(self, conn: sqlite3.Connection, digests: Sequence[bytes]) -> dict[bytes, int]:
        """The plain size of each of those `digests` the block store holds (a commit checks many at once)."""
        sizes: dict[bytes, int] = {}
        for part in batched(sorted(digests), BIG_BATCH):
            marks = ",".join("?" * len(part))
            sizes.update(conn.execute(f"SELECT sha256, size FROM blocks WHERE sha256 IN ({marks})", part).fetchall())
        return sizes

    def readable_blocks(self, conn: sqlite3.Connection, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        """Those `digests` that `user_id` has proved to hold (uploaded) or may read through a file it may read.

        A member of the whole box reads every block of the box; a member of one folder only the blocks
        that some version of a path under that folder referenced: knowing a hash gives nothing.
        """
        shares = conn.execute("SELECT box_id, prefix FROM members WHERE user_id = ?", (user_id,)).fetchall()
        # Cheapest proof first; each later query only asks about what is still unproved.
        queries: list[tuple[str, tuple[Any, ...]]] = [
            ("SELECT sha256 FROM uploads WHERE user_id = ? AND sha256 IN ({marks})", (user_id,))]
        queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = ? AND sha256 IN ({marks})",
                     (r["box_id"],)) for r in shares if r["prefix"] == ""]
        queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = ? AND path >= ? AND path < ? "
                     "AND sha256 IN ({marks})", (r["box_id"], r["prefix"] + "/", r["prefix"] + "0"))
                    for r in shares if r["prefix"] != ""]
        readable: set[bytes] = set()
        rest = sorted(digests)  # in key order, so lookups walk the index forward
        for sql, params in queries:
            if not rest:
                break
            for part in batched(rest, BIG_BATCH):
                query = sql.format(marks=",".join("?" * len(part)))
                readable.update(r[0] for r in conn.execute(query, (*params, *part)).fetchall())
            rest = [d for d in rest if d not in readable]
        return readable

    def add_blocks(self, user_id: int, rows: Iterable[tuple[bytes, int, int, int, str, int]],
                   proved: Iterable[bytes], healed: Sequence[bytes] = ()) -> None:
        """Record newly stored blocks and every block this user has proved to hold, in one transaction.

        `healed` blocks were damaged: their fresh copy (in `rows`) replaces the damaged one.
        """
        with self.write() as conn:
            for part in batched(sorted(healed)):
                marks = ",".join("?" * len(part))
                conn.execute(f"DELETE FROM blocks WHERE sha256 IN ({marks})", part)
                conn.execute(f"DELETE FROM damaged WHERE sha256 IN ({marks})", part)
            insert_rows(conn, "INSERT OR IGNORE INTO blocks (sha256, size, stored_size, codec, pack, offset)",
                        sorted(rows), 6)
            insert_rows(conn, "INSERT OR IGNORE INTO uploads (user_id, sha256)",
                        sorted((user_id, d) for d in proved), 2)

    def damaged_of(self, conn: sqlite3.Connection, digests: Sequence[bytes]) -> set[bytes]:
        """Those `digests` known to be damaged in the store."""
        if conn.execute("SELECT 1 FROM damaged LIMIT 1").fetchone() is None:
            return set()  # the usual case: one cheap look, not one per batch
        found: set[bytes] = set()
        for part in batched(sorted(digests), BIG_BATCH):
            marks = ",".join("?" * len(part))
            found.update(bytes(r[0]) for r in conn.execute(f"SELECT sha256 FROM damaged WHERE sha256 IN ({marks})",
                                                           part))
        return found

    def mark_damaged(self, digests: Iterable[tuple[bytes, str]]) -> None:
        """Remember blocks found damaged (digest, reason): uploaders are asked for them again."""
        with self.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO damaged (sha256, found, reason) VALUES (?, ?, ?)",
                             [(d, time.time(), reason) for d, reason in digests])

    def block(self, digest: bytes) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM blocks WHERE sha256 = ?", (digest,)).fetchone()

    # --- journal ----------------------------------------------------------------------------

    def heads_of(self, conn: sqlite3.Connection, box_id: int, paths: Sequence[str]) -> dict[str, sqlite3.Row]:
        """Current (rev, present) of each of `paths` that the box has ever held."""
        heads: dict[str, sqlite3.Row] = {}
        for part in batched(paths):
            marks = ",".join("?" * len(part))
            for row in conn.execute(
                f"SELECT path, rev, present FROM files WHERE box_id = ? AND path IN ({marks})", (box_id, *part)
            ):
                heads[row["path"]] = row
        return heads

    def present_kinds(self, conn: sqlite3.Connection, box_id: int, paths: Sequence[str]) -> dict[str, str]:
        """The kind (file, dir, link) of each of `paths` that the head of the box holds."""
        kinds: dict[str, str] = {}
        for part in batched(paths):
            marks = ",".join("?" * len(part))
            kinds.update(conn.execute(
                "SELECT f.path, j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.seq = f.rev "
                f"AND j.path = f.path WHERE f.box_id = ? AND f.present = 1 AND f.path IN ({marks})",
                (box_id, *part)).fetchall())
        return kinds

    def holding(self, conn: sqlite3.Connection, box_id: int, paths: Sequence[str], deeper: bool = False) -> set[str]:
        """Those of `paths` that the head of the box holds something under ('' for the top: any path at all);
        with `deeper`, something inside a folder directly under them (the walk stops at the first such path)."""
        found: set[str] = set()
        deep = " AND instr(path, '/') > 0" if deeper else ""
        if "" in paths and conn.execute(
                f"SELECT 1 FROM files WHERE box_id = ? AND present = 1{deep} LIMIT 1", (box_id,)).fetchone():
            found.add("")
        rest = [p for p in paths if p]
        deep = " AND instr(substr(f.path, length(q.value) + 2), '/') > 0" if deeper else ""
        # One statement per batch, one index seek per path.
        for part in batched(rest, BIG_BATCH):
            found.update(r[0] for r in conn.execute(
                "SELECT q.value FROM json_each(?) q WHERE EXISTS (SELECT 1 FROM files f WHERE f.box_id = ? "
                f"AND f.path >= q.value || '/' AND f.path < q.value || '0' AND f.present = 1{deep})",
                (json.dumps(list(part)), box_id)))
        return found

    def present_under(self, conn: sqlite3.Connection, box_id: int, folder: str) -> list[str]:
        """Every path the head of the box holds under `folder`."""
        return [r[0] for r in conn.execute(
            "SELECT path FROM files WHERE box_id = ? AND path >= ? AND path < ? AND present = 1 ORDER BY path",
            (box_id, folder + "/", folder + "0"))]

    def append_commit(
        self,
        conn: sqlite3.Connection,
        box_id: int,
        user_id: int,
        device_id: int | None,
        message: str,
        entries: Sequence[dict[str, Any]],
        key: str | None = None,
    ) -> tuple[int, float]:
        """Write one commit and its journal entries inside the caller's transaction; return (seq, time)."""
        seq, now = self._new_commit(conn, box_id, user_id, device_id, message, len(entries), key)
        insert_rows(
            conn,
            "INSERT INTO journal (box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, content_hash, target, "
            "checksum)",
            [(box_id, seq, e["path"], e["op"], e["kind"], e["size"], e["mtime_ns"], e["mode"],
              e["blocks"], "", e["target"],  # the content hash is computed from the blocks when read
              entry_checksum(box_id, seq, e["path"], e["op"], e["kind"], e["size"], e["mtime_ns"], e["mode"],
                             e["blocks"], e["target"]))
             for e in entries], 12)
        insert_rows(conn, "INSERT INTO files (box_id, path, rev, present)",
                    [(box_id, e["path"], seq, int(e["op"] == "put")) for e in entries], 4,
                    "ON CONFLICT (box_id, path) DO UPDATE SET rev = excluded.rev, present = excluded.present")
        insert_rows(conn, "INSERT OR IGNORE INTO block_paths (sha256, box_id, path)",
                    [(d, box_id, path) for d, path in _blocks_by_path(entries)], 3)
        return seq, now

    def _new_commit(self, conn: sqlite3.Connection, box_id: int, user_id: int, device_id: int | None,
                    message: str, nchanges: int, key: str | None) -> tuple[int, float]:
        seq = self.head_in(conn, box_id) + 1
        now = time.time()
        conn.execute(
            "INSERT INTO commits (box_id, seq, user_id, device_id, message, time, nchanges, key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (box_id, seq, user_id, device_id, message, now, nchanges, key),
        )
        conn.execute("UPDATE boxes SET head = ? WHERE id = ?", (seq, box_id))
        return seq, now

    # --- staged commits -----------------------------------------------------------------------

    def create_stage(self, box_id: int, user_id: int) -> int:
        """A new, empty stage for a commit of `user_id` in `box_id`; expired stages are dropped first."""
        with self.write() as conn:
            old = [r[0] for r in conn.execute("SELECT id FROM stages WHERE created < ?", (time.time() - STAGE_TTL,))]
            for stage in old:
                self._drop_stage(conn, stage)
            cur = conn.execute("INSERT INTO stages (box_id, user_id, created) VALUES (?, ?, ?)",
                               (box_id, user_id, time.time()))
            return int(cur.lastrowid or 0)

    def stage(self, conn: sqlite3.Connection, stage: int) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM stages WHERE id = ?", (stage,)).fetchone()

    def add_staged(self, conn: sqlite3.Connection, stage: int, entries: Sequence[dict[str, Any]],
                   parents: Sequence[int]) -> int:
        """Stage checked `entries` (a path staged again keeps its latest change); return the stage's size."""
        insert_rows(
            conn, "INSERT OR REPLACE INTO stage_changes (stage, path, op, kind, size, mtime_ns, mode, blocks, target, "
            "parent_rev)",
            [(stage, e["path"], e["op"], e["kind"], e["size"], e["mtime_ns"], e["mode"], e["blocks"], e["target"],
              parent) for e, parent in zip(entries, parents, strict=True)], 10)
        return int(conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = ?", (stage,)).fetchone()[0])

    def add_stage_folders(self, conn: sqlite3.Connection, stage: int, folders: Mapping[str, bool]) -> None:
        """Note the folders holding staged puts (see the stage_folders table); `folders[f]`: it holds leaves."""
        insert_rows(conn, "INSERT INTO stage_folders (stage, folder, leaves)",
                    [(stage, f, int(leaves)) for f, leaves in sorted(folders.items())], 3,
                    "ON CONFLICT (stage, folder) DO UPDATE SET leaves = MAX(leaves, excluded.leaves)")

    def stage_folders(self, conn: sqlite3.Connection, stage: int) -> dict[str, bool]:
        """The folders noted by add_stage_folders: folder -> holds puts of files or links."""
        return {r[0]: bool(r[1]) for r in conn.execute(
            "SELECT folder, leaves FROM stage_folders WHERE stage = ?", (stage,))}

    def staged_kinds(self, conn: sqlite3.Connection, stage: int, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(op, kind) of the staged change of each of `paths` that the stage holds."""
        found: dict[str, tuple[str, str]] = {}
        for part in batched(paths):
            marks = ",".join("?" * len(part))
            found.update((r[0], (r[1], r[2])) for r in conn.execute(
                f"SELECT path, op, kind FROM stage_changes WHERE stage = ? AND path IN ({marks})", (stage, *part)))
        return found

    def staged_under(self, conn: sqlite3.Connection, stage: int, folder: str,
                     limit: int = -1) -> list[tuple[str, str, str]]:
        """(path, op, kind) of the staged changes under `folder`, in path order."""
        return [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT path, op, kind FROM stage_changes WHERE stage = ? AND path >= ? AND path < ? "
            "ORDER BY path LIMIT ?", (stage, folder + "/", folder + "0", limit))]

    def staged_leaves_holding(self, conn: sqlite3.Connection, box_id: int, stage: int,
                              folders: Sequence[str]) -> list[str]:
        """The staged puts of files and links directly inside `folders` ('' for the top) under whose name
        the head of the box holds something: one statement, one index seek per such put."""
        holds = ("EXISTS (SELECT 1 FROM files h WHERE h.box_id = ? AND h.path >= s.path || '/' "
                 "AND h.path < s.path || '0' AND h.present = 1)")
        found = []
        if "" in folders:
            found += [r[0] for r in conn.execute(
                "SELECT s.path FROM stage_changes s WHERE s.stage = ? AND s.op = 'put' AND s.kind != 'dir' "
                f"AND instr(s.path, '/') = 0 AND {holds}", (stage, box_id))]
        rest = [f for f in folders if f]
        for part in batched(rest, BIG_BATCH):
            found += [r[0] for r in conn.execute(
                "SELECT s.path FROM json_each(?) f JOIN stage_changes s ON s.stage = ? AND s.path >= f.value || '/' "
                "AND s.path < f.value || '0' WHERE s.op = 'put' AND s.kind != 'dir' "
                f"AND instr(substr(s.path, length(f.value) + 2), '/') = 0 AND {holds}",
                (json.dumps(list(part)), stage, box_id))]
        return sorted(found)

    def staged_outside(self, conn: sqlite3.Connection, stage: int, prefix: str) -> bool:
        """True if the stage holds a path outside folder `prefix`."""
        return conn.execute(
            "SELECT 1 FROM stage_changes WHERE stage = ? AND NOT (path >= ? AND path < ?) LIMIT 1",
            (stage, prefix + "/", prefix + "0"),
        ).fetchone() is not None

    def staged_conflicts(self, conn: sqlite3.Connection, box_id: int, stage: int) -> list[dict[str, Any]]:
        """The staged changes whose path moved on since the revision they were based on (see Service.commit)."""
        rows = conn.execute(
            "SELECT s.path, s.parent_rev, COALESCE(f.rev, 0) AS head_rev, COALESCE(f.present, 0) AS present "
            "FROM stage_changes s LEFT JOIN files f ON f.box_id = ? AND f.path = s.path WHERE s.stage = ? AND NOT ("
            "(s.op = 'put' AND (s.parent_rev = COALESCE(f.rev, 0) "
            "OR (COALESCE(f.present, 0) = 0 AND s.parent_rev = 0))) "
            "OR (s.op = 'delete' AND COALESCE(f.present, 0) = 1 AND s.parent_rev = f.rev)) ORDER BY s.path",
            (box_id, stage),
        ).fetchall()
        return [{"path": r["path"], "parent_rev": r["parent_rev"], "head_rev": r["head_rev"],
                 "present": bool(r["present"])} for r in rows]

    def append_staged_commit(self, conn: sqlite3.Connection, box_id: int, user_id: int, device_id: int | None,
                             message: str, stage: int, key: str | None = None) -> tuple[int, float, int]:
        """Write one commit of every staged change inside the caller's transaction, and drop the stage.

        Return (seq, time, number of changes). The changes move from table to table inside SQLite.
        """
        nchanges = int(conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = ?", (stage,)).fetchone()[0])
        seq, now = self._new_commit(conn, box_id, user_id, device_id, message, nchanges, key)
        conn.execute(
            "INSERT INTO journal (box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, content_hash, target, "
            "checksum) SELECT ?1, ?2, path, op, kind, size, mtime_ns, mode, blocks, '', target, "
            "box_checksum(?1, ?2, path, op, kind, size, mtime_ns, mode, blocks, target) FROM stage_changes "
            "WHERE stage = ?3",
            (box_id, seq, stage),
        )
        conn.execute(
            "INSERT INTO files (box_id, path, rev, present) SELECT ?, path, ?, op = 'put' FROM stage_changes "
            "WHERE stage = ? ON CONFLICT (box_id, path) DO UPDATE SET rev = excluded.rev, present = excluded.present",
            (box_id, seq, stage),
        )
        # Which blocks each path holds is worked out from the staged block lists only now: a table of
        # (block, path) filled while staging took a random-key insert per block in every part's transaction.
        # A file of one block, most files, is its own row; only longer lists are split, here in Python.
        conn.execute(
            "INSERT OR IGNORE INTO block_paths (sha256, box_id, path) "
            "SELECT blocks, ?, path FROM stage_changes WHERE stage = ? AND length(blocks) = 32 ORDER BY blocks",
            (box_id, stage),
        )
        staged = conn.execute("SELECT path, blocks FROM stage_changes WHERE stage = ? AND length(blocks) > 32",
                              (stage,))
        insert_rows(conn, "INSERT OR IGNORE INTO block_paths (sha256, box_id, path)",
                    [(d, box_id, path) for d, path in _blocks_by_path(staged)], 3)
        self._drop_stage(conn, stage)
        return seq, now, nchanges

    @staticmethod
    def _drop_stage(conn: sqlite3.Connection, stage: int) -> None:
        conn.execute("DELETE FROM stage_changes WHERE stage = ?", (stage,))
        conn.execute("DELETE FROM stage_folders WHERE stage = ?", (stage,))
        conn.execute("DELETE FROM stages WHERE id = ?", (stage,))

    def commit_by_key(self, box_id: int, key: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT seq, time, nchanges FROM commits WHERE box_id = ? AND key = ?", (box_id, key)
        ).fetchone()

    def head_in(self, conn: sqlite3.Connection, box_id: int) -> int:
        return int(conn.execute("SELECT head FROM boxes WHERE id = ?", (box_id,)).fetchone()[0])

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[sqlite3.Row], int]:
        """Journal entries of whole commits after `cursor`, about `limit` entries; and the last seq covered."""
        with self.read() as conn:
            # Find the last seq whose entries still fit in the page, but always take at least one commit.
            upto = cursor
            total = 0
            for row in conn.execute(
                "SELECT seq, nchanges FROM commits WHERE box_id = ? AND seq > ? ORDER BY seq", (box_id, cursor)
            ):
                if total and total + row["nchanges"] > limit:
                    break
                upto = row["seq"]
                total += row["nchanges"]
            rows = conn.execute(
                "SELECT * FROM journal WHERE box_id = ? AND seq > ? AND seq <= ? ORDER BY seq, path",
                (box_id, cursor, upto),
            ).fetchall()
            return rows, upto

    def tree(self, box_id: int, seq: int, prefix: str) -> list[sqlite3.Row]:
        """The entries present at `seq` (the latest put of each path not deleted since), under `prefix`."""
        lo, hi = (prefix + "/", prefix + "0") if prefix else ("", "\U0010ffff")
        with self.read() as conn:
            return conn.execute(
                "SELECT j.* FROM journal j JOIN (SELECT path, MAX(seq) AS seq FROM journal "
                "WHERE box_id = ? AND seq <= ? AND ((path >= ? AND path < ?) OR path = ?) GROUP BY path) x "
                "ON j.box_id = ? AND j.path = x.path AND j.seq = x.seq WHERE j.op = 'put' ORDER BY j.path",
                (box_id, seq, lo, hi, prefix, box_id),
            ).fetchall()

    def seq_at(self, box_id: int, when: float) -> int:
        """The last commit seq at or before time `when` (0 if none)."""
        row = self.conn.execute(
            "SELECT MAX(seq) FROM commits WHERE box_id = ? AND time <= ?", (box_id, when)
        ).fetchone()
        return int(row[0] or 0)

    def commits(self, box_id: int, limit: int, before: int | None) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT c.*, u.name AS user, d.name AS device FROM commits c JOIN users u ON u.id = c.user_id "
            "LEFT JOIN devices d ON d.id = c.device_id WHERE c.box_id = ? AND c.seq < ? "
            "ORDER BY c.seq DESC LIMIT ?",
            (box_id, before if before is not None else 1 << 62, limit),
        ).fetchall()

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM journal WHERE box_id = ? AND seq = ? ORDER BY path LIMIT ?",
            (box_id, seq, limit),
        ).fetchall()

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[sqlite3.Row]:
        """Every journal entry of `prefix` or anything under it, newest first, with who and when."""
        lo, hi = prefix + "/", prefix + "0"
        return self.conn.execute(
            "SELECT j.*, c.time, c.message, "
            "u.name AS user, d.name AS device FROM journal j JOIN commits c ON c.box_id = j.box_id AND c.seq = j.seq "
            "JOIN users u ON u.id = c.user_id LEFT JOIN devices d ON d.id = c.device_id "
            "WHERE j.box_id = ? AND (j.path = ? OR (j.path >= ? AND j.path < ?)) ORDER BY j.seq DESC, j.path LIMIT ?",
            (box_id, prefix, lo, hi, limit),
        ).fetchall()

    def count_after(self, box_id: int, cursor: int, exclude_device: int | None) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(SUM(nchanges), 0) FROM commits WHERE box_id = ? AND seq > ? "
            "AND (device_id IS NOT ? OR device_id IS NULL)",
            (box_id, cursor, exclude_device),
        ).fetchone()
        return int(row[0])
