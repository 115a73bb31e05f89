"""SQLite connections of the metadata store: one per thread, WAL mode, every write one transaction."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from server_min.integrity import register
from server_min.meta.records import Entry

# A WAL larger than this after a write is checkpointed and truncated (it would otherwise keep up to 4 MiB).
WAL_TRIM_BYTES = 256 << 10

# SQLite's limit on bound variables is far higher, but small batches keep each statement cheap.
BATCH = 500
BIG_BATCH = 5000  # for lookups of plain columns, where fewer statements matter more

# The journal's columns in the order of records.Entry ("j." where a query joins the journal).
ENTRY = "box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, target, checksum"
J_ENTRY = ", ".join(f"j.{c}" for c in ENTRY.split(", "))
_tuple = tuple.__new__


def batched(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """Slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def entry_row(_: sqlite3.Cursor, row: tuple[Any, ...]) -> Entry:
    """A row factory making journal entries straight from the row's tuple."""
    return _tuple(Entry, row)


def entries(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Entry]:
    """The journal entries a query selects (its columns: ENTRY or J_ENTRY)."""
    cur = conn.cursor()
    cur.row_factory = entry_row
    return cur.execute(sql, params).fetchall()


def range_under(prefix: str) -> tuple[str, str]:
    """The half-open string range holding every path strictly under folder `prefix` ('' for all)."""
    return (prefix + "/", prefix + "0") if prefix else ("", "\U0010ffff")


class Connections:
    """One connection per thread to one database file; writes serialised by SQLite itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writing = threading.RLock()
        self._all: list[sqlite3.Connection] = []

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
        self._all.append(conn)
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
        # processes) sleeps in steps of 1-100 ms, which oversleeps under load.
        with self._writing:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._trim_wal(conn)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for every query inside it."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

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

    def close(self) -> None:
        """Close every connection this store opened."""
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._local = threading.local()


__all__ = ["BATCH", "BIG_BATCH", "ENTRY", "J_ENTRY", "WAL_TRIM_BYTES", "Connections", "batched", "entries",
           "range_under"]
