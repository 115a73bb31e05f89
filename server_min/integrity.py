"""Checksums that make damage in the metadata visible, and the errors a damaged store answers with.

Every journal entry carries an xxh3-64 of everything that says what it is (box, seq, path, op, kind,
size, mtime, mode, block list, link target), computed at commit and verified whenever an entry is
served: a flipped byte in a path or a block list gives a Damaged error naming the entry, never a file
under another name or with other bytes.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import xxhash

from server_min.errors import Damaged, OutOfSpace

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_digest = xxhash.xxh3_64_digest
_FORMAT = b"%d\0%d\0%s\0%s\0%s\0%d\0%d\0%d\0%s\0%s"
COLUMNS = ("box_id", "seq", "path", "op", "kind", "size", "mtime_ns", "mode", "target", "blocks", "checksum")
SQLITE_FULL = 13
SQLITE_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def entry_checksum(box_id: int, seq: int, path: str, op: str, kind: str, size: int, mtime_ns: int, mode: int,
                   blocks: bytes | None, target: str | None) -> bytes:
    """The 8-byte checksum of one journal entry (the same function is registered in SQLite for SQL inserts)."""
    # One bytes format, no intermediate str: half the time of an f-string (0.2 s per 100,000 entries).
    return _digest(_FORMAT % (
        box_id, seq, path.encode("utf-8", "surrogateescape"), op.encode(), kind.encode(), size, mtime_ns, mode,
        (target or "").encode("utf-8", "surrogateescape"), blocks or b""))


def row_checksum(row: Mapping[str, Any]) -> bytes:
    """The checksum a journal row should carry."""
    return entry_checksum(row["box_id"], row["seq"], row["path"], row["op"], row["kind"], row["size"],
                          row["mtime_ns"], row["mode"], row["blocks"], row["target"])


def verified_rows(rows: Iterable[sqlite3.Row]) -> list[sqlite3.Row]:
    """`rows` of the journal (every column), or Damaged naming the first entry whose checksum fails.

    Columns are looked up by position, found once by name: sqlite3.Row's lookup by name scans the
    column names, and a page of 100,000 changes is checked in 0.25 s instead of 0.5 s.
    """
    rows = list(rows)
    if not rows:
        return rows
    names = rows[0].keys()
    b, q, p, o, k, s, mt, md, tg, bl, ck = (names.index(n) for n in COLUMNS)
    encode = str.encode
    for r in rows:
        want = _digest(_FORMAT % (r[b], r[q], encode(r[p], "utf-8", "surrogateescape"), encode(r[o]), encode(r[k]),
                                  r[s], r[mt], r[md], encode(r[tg] or "", "utf-8", "surrogateescape"), r[bl] or b""))
        if r[ck] != want:
            raise Damaged(f"journal entry {r[p]!r} of commit {r[q]} is damaged on the server "
                          "(its checksum does not match); run 'boxctl admin check' on the server",
                          blocks=[], entry={"seq": r[q], "path": r[p]})
    return rows


def register(conn: sqlite3.Connection) -> None:
    """Make `box_checksum(...)` available to SQL on `conn` (staged commits insert journal rows in SQL)."""
    conn.create_function("box_checksum", 10, entry_checksum, deterministic=True)


def is_full(exc: BaseException) -> bool:
    """True if `exc` says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc)
    return False


def is_corrupt(exc: BaseException) -> bool:
    """True if SQLite says the database file is damaged."""
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in SQLITE_CORRUPT or "malformed" in str(exc))


def out_of_space() -> OutOfSpace:
    """The error answered when a store hit a full disk (the upload's bytes were freed already)."""
    return OutOfSpace("its disk is full, so this upload was not stored (nothing of it was kept)")
