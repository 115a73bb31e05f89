"""The local index (`.box/index.db`): what each path looked like at the last sync, and the cursor."""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from box_common.sqlite_rows import MAX_VARIABLES, insert_rows

STATS_CACHE = "stats.cache"  # beside the database: a marshal snapshot of what a scan compares

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, mode INTEGER NOT NULL, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
    blocks BLOB NOT NULL, target TEXT, sizes BLOB NOT NULL DEFAULT x'') WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# A file whose mtime is this close to "now" when we record it could still change within the same
# timestamp tick without us noticing (git's "racily clean" problem): record it so it gets hashed again.
RACY_NS = 2_000_000_000

# The revision of entries a push writes before the server has named its commit (see Index.set_rev).
PENDING_REV = -1
# Naming more pending entries than this, one pass over the table beats looking up each path
# (100,000 paths: 0.09 s against 0.3 s; one pass over 100,000 entries that match none: 13 ms).
SCAN_ABOVE = 5000


@dataclass(slots=True)
class IndexEntry:
    """A path as it was when this device last synced it."""

    path: str
    kind: str
    size: int
    mtime_ns: int
    inode: int
    mode: int
    rev: int
    content_hash: str
    blocks: bytes
    target: str | None = None
    sizes: bytes = b""  # each block's length, uint32 big-endian, when known

    @property
    def block_ids(self) -> list[str]:
        return [self.blocks[i : i + 32].hex() for i in range(0, len(self.blocks), 32)]

    def block_spans(self) -> list[tuple[bytes, int, int]]:
        """(digest, offset, length) of each block, if the sizes are known; [] otherwise."""
        count = len(self.blocks) // 32
        if len(self.sizes) != 4 * count:
            return []
        spans = []
        offset = 0
        for i in range(count):
            length = int.from_bytes(self.sizes[4 * i : 4 * i + 4], "big")
            spans.append((self.blocks[32 * i : 32 * i + 32], offset, length))
            offset += length
        return spans


def pack_sizes(sizes: list[int]) -> bytes:
    """Block lengths as stored in the index."""
    return struct.pack(f">{len(sizes)}I", *sizes)


class Index:
    """SQLite index of one synced folder; every update runs in one transaction."""

    def __init__(self, path: Path) -> None:
        self.cache_path = path.with_name(STATS_CACHE)
        # A push writes its new entries from a helper thread while the main one waits for the server;
        # the connection is never used by two threads at once.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; it also moves the generation that the stat cache is checked against."""
        self.begin()
        try:
            yield self.conn
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def begin(self) -> None:
        """Open a write transaction by hand (see `transaction`); end it with `commit` or `rollback`."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit the open transaction, moving the generation that the stat cache is checked against."""
        try:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
        except BaseException:
            self.rollback()
            raise
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Drop the open transaction, if there is one."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def entries(self) -> dict[str, IndexEntry]:
        """Every indexed path."""
        return {
            row[0]: IndexEntry(*row)
            for row in self.conn.execute(
                "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries"
            )
        }

    def block_ids(self) -> set[bytes]:
        """Every block id the indexed files are made of (32-byte SHA-256 digests)."""
        ids: set[bytes] = set()
        for (blocks,) in self.conn.execute("SELECT blocks FROM entries WHERE length(blocks) > 0"):
            if len(blocks) == 32:
                ids.add(blocks)
            else:
                ids.update(blocks[i : i + 32] for i in range(0, len(blocks), 32))
        return ids

    def stats(self) -> dict[str, tuple[str, int, int, int, int, str | None]]:
        """(kind, size, mtime_ns, inode, mode, target) of every path: all a scan needs, loaded fast.

        A marshal snapshot beside the database serves it when its generation matches the index's
        (a big tree loads several times faster than from SQL); otherwise SQL, and a new snapshot.
        """
        generation = self.get_meta("generation", "0")
        try:
            cached_generation, stats = marshal.loads(self.cache_path.read_bytes())
            if cached_generation == generation:
                return stats
        except (OSError, EOFError, ValueError, TypeError):
            pass
        # One shared string per kind, like a scan's: comparing two of them is then one pointer check.
        kinds = {"file": "file", "dir": "dir", "link": "link"}
        stats = {
            path: (kinds.get(kind, kind), size, mtime_ns, inode, mode, target)
            for path, kind, size, mtime_ns, inode, mode, target
            in self.conn.execute("SELECT path, kind, size, mtime_ns, inode, mode, target FROM entries")
        }
        temp = self.cache_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            temp.write_bytes(marshal.dumps((generation, stats)))
            os.replace(temp, self.cache_path)
        return stats

    def get_many(self, paths: list[str]) -> dict[str, IndexEntry]:
        """Full entries of `paths` (those that are indexed)."""
        found: dict[str, IndexEntry] = {}
        for start in range(0, len(paths), 500):
            part = paths[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries "
                f"WHERE path IN ({marks})",
                part,
            ):
                found[row[0]] = IndexEntry(*row)
        return found

    def get(self, path: str) -> IndexEntry | None:
        row = self.conn.execute(
            "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries "
            "WHERE path = ?",
            (path,),
        ).fetchone()
        return IndexEntry(*row) if row else None

    def put(self, entries: Iterable[IndexEntry], conn: sqlite3.Connection | None = None) -> None:
        """Insert or replace entries (inside the caller's transaction if given)."""
        now = time.time_ns()
        rows = [
            (e.path, e.kind, e.size, 0 if now - e.mtime_ns < RACY_NS else e.mtime_ns, e.inode, e.mode, e.rev,
             e.content_hash, e.blocks, e.target, e.sizes)
            for e in entries
        ]
        insert_rows(conn or self.conn, "INSERT OR REPLACE INTO entries", rows, 11)

    def set_rev(self, paths: list[str], rev: int, conn: sqlite3.Connection | None = None) -> None:
        """Give `paths` revision `rev`: a push writes its entries with PENDING_REV in an open transaction
        before the server names the commit; `paths` must be every entry written so."""
        if len(paths) > SCAN_ABOVE:
            (conn or self.conn).execute("UPDATE entries SET rev = ? WHERE rev = ?", (rev, PENDING_REV))
        else:
            self._for_paths("UPDATE entries SET rev = ? WHERE path IN", list(paths), conn, rev)

    def delete(self, paths: Iterable[str], conn: sqlite3.Connection | None = None) -> None:
        self._for_paths("DELETE FROM entries WHERE path IN", list(paths), conn)

    def _for_paths(self, head: str, paths: list[str], conn: sqlite3.Connection | None, *params: Any) -> None:
        """Run `{head} (?, ...)` with `params` first, over `paths` in as few statements as SQLite allows."""
        per = MAX_VARIABLES - len(params)
        for start in range(0, len(paths), per):
            part = paths[start : start + per]
            (conn or self.conn).execute(f"{head} ({','.join('?' * len(part))})", (*params, *part))

    def get_meta(self, key: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> int:
        """The seq up to which this device has applied the box's journal."""
        return int(self.get_meta("cursor", "0"))

    def set_cursor(self, seq: int, conn: sqlite3.Connection | None = None) -> None:
        self.set_meta("cursor", str(seq), conn)
