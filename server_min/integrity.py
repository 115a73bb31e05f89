"""Checksums that make damage in the metadata visible, and the errors a damaged store answers with.

Every journal entry carries an xxh3-64 of everything that says what it is (box, seq, path, op, kind,
size, mtime, mode, block list, link target), computed at commit and verified whenever an entry is
served: a flipped byte in a path or a block list gives a Damaged error naming the entry, never a file
under another name or with other bytes.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import xxhash

from server_min.errors import Damaged, OutOfSpace

if TYPE_CHECKING:
    from server_min.meta.records import Entry

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_digest = xxhash.xxh3_64_digest
_FORMAT = b"%d\0%d\0%s\0%s\0%s\0%d\0%d\0%d\0%s\0%s"


def entry_checksum(box_id: int, seq: int, path: str, op: str, kind: str, size: int, mtime_ns: int, mode: int,
                   blocks: bytes | None, target: str | None) -> bytes:
    """The 8-byte checksum of one journal entry (the same function is registered in SQLite for SQL inserts)."""
    # One bytes format, no intermediate str: cheaper than an f-string, and a commit of many new files
    # (W5 first push) makes one per entry.
    return _digest(_FORMAT % (
        box_id, seq, path.encode("utf-8", "surrogateescape"), op.encode(), kind.encode(), size, mtime_ns, mode,
        (target or "").encode("utf-8", "surrogateescape"), blocks or b""))


def row_checksum(row: Mapping[str, Any]) -> bytes:
    """The checksum a journal row should carry."""
    return entry_checksum(row["box_id"], row["seq"], row["path"], row["op"], row["kind"], row["size"],
                          row["mtime_ns"], row["mode"], row["blocks"], row["target"])


def verified(entries: Iterable[Entry]) -> list[Entry]:
    """`entries` of the journal, or Damaged naming the first entry whose checksum fails."""
    entries = list(entries)
    encode = str.encode
    for e in entries:
        want = _digest(_FORMAT % (e.box_id, e.seq, encode(e.path, "utf-8", "surrogateescape"), encode(e.op),
                                  encode(e.kind), e.size, e.mtime_ns, e.mode,
                                  encode(e.target or "", "utf-8", "surrogateescape"), e.blocks or b""))
        if e.checksum != want:
            raise Damaged(f"journal entry {e.path!r} of commit {e.seq} is damaged on the server "
                          "(its checksum does not match); run 'box-server check' on the server",
                          blocks=[], entry={"seq": e.seq, "path": e.path})
    return entries


def register(conn: Any) -> None:
    """Make `box_checksum(...)` available to SQL on a SQLite connection (staged commits insert journal rows
    in SQL)."""
    conn.create_function("box_checksum", 10, entry_checksum, deterministic=True)


def is_full(exc: BaseException) -> bool:
    """True if `exc` (an OSError) says the disk, or the user's quota, is full."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def out_of_space() -> OutOfSpace:
    """The error answered when a store hit a full disk (the upload's bytes were freed already)."""
    return OutOfSpace("its disk is full, so this upload was not stored (nothing of it was kept)")
