"""`box-server check` (also `box-server admin check`, `boxctl admin check`): prove a data folder whole.

Like restic's checker: the metadata database's own integrity check, every journal entry's checksum,
every block an entry names present in the block table and inside its pack at the recorded place, and
with `read_data` every stored block read, decompressed and hashed. Orphan packs and bytes (uploads whose
commit never came, or copies replaced by a fresh upload) are counted, not errors.

Safe while the server runs: the database is opened read-only unless repairing, the upload temp folder
is never touched, and the whole scan reads one snapshot of the database (one read transaction), so a
commit landing mid-check is either wholly seen or not at all, never reported as blocks missing.

With `repair`, each fault found in the snapshot is checked again inside the write transaction that
mends it (a push may have healed it meanwhile):
- damaged packs are salvaged (their good blocks copied to a new pack) and moved aside to
  `blocks/damaged/`, and their lost blocks are marked damaged, so that any device that still holds
  them heals the store with a push (`boxctl push --repair-blocks`);
- journal entries whose checksum fails are moved to the `damaged_entries` table (kept, never served),
  and the head of each path they wrote goes back to its last good revision (or to none), so pulls, `ls`
  and `log` go on; the report names each path and revision lost. A device that still holds such a file
  finds it out of step (`boxctl check`) and pushes it again as a new file (`boxctl check --repair`);
- a database whose indexes fail SQLite's integrity check gets them rebuilt (REINDEX).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from box_common.codec import InflateError, inflate
from box_common.frames import CODEC_RAW, CODEC_ZSTD, MAX_BLOCK
from server_min.blocks.local import pack_file
from server_min.integrity import register, row_checksum

MAX_LISTED = 1000  # entries listed per kind of damage in a report; the counts are always whole
MARKED_EARLIER = "marked damaged earlier"


@dataclass
class CheckReport:
    """What a check found; `whole` when nothing is damaged."""

    database: list[str] = field(default_factory=list)  # messages of PRAGMA integrity_check (empty: ok)
    entries: int = 0
    blocks: int = 0
    packs: int = 0
    blocks_read: int = 0
    bad_entries: list[dict[str, Any]] = field(default_factory=list)  # checksum mismatches
    damaged_blocks: dict[str, str] = field(default_factory=dict)  # sha -> reason
    lost: list[dict[str, Any]] = field(default_factory=list)  # file versions that lost blocks
    orphan_packs: int = 0
    orphan_bytes: int = 0
    set_aside: int = 0  # journal entries set aside by an earlier repair (lost versions, not damage any more)
    repaired: dict[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return not (self.database or self.bad_entries or self.damaged_blocks)

    def as_json(self) -> dict[str, Any]:
        return {
            "whole": self.whole, "database": self.database or ["ok"], "entries": self.entries,
            "blocks": self.blocks, "packs": self.packs, "blocks_read": self.blocks_read,
            "bad_entries": self.bad_entries[:MAX_LISTED],
            "damaged_blocks": [{"sha256": s, "reason": r} for s, r in sorted(self.damaged_blocks.items())][:MAX_LISTED],
            "damaged_block_count": len(self.damaged_blocks), "lost": self.lost[:MAX_LISTED],
            "orphan_packs": self.orphan_packs, "orphan_bytes": self.orphan_bytes,
            "entries_set_aside": self.set_aside, "repaired": self.repaired,
        }


def check(data: Path, read_data: bool = False, repair: bool = False) -> CheckReport:
    """Check the data folder `data` of a server (see the module doc); never raises for damage found."""
    db = data / "meta.db"
    if not db.is_file():
        raise FileNotFoundError(f"{db} does not exist: is {data} a server's data folder?")
    conn = _open(db, writable=repair)
    report = CheckReport()
    try:
        # One snapshot for every query of the scan: the packs are listed inside it, after the block table
        # is read, so every block of the snapshot was in its pack before the listing (packs are written
        # before their rows commit); blocks committed later are not in the snapshot, their packs orphans.
        conn.execute("BEGIN")
        try:
            report.database = _integrity(conn)
            blocks = _block_table(conn, report)
            packs = _pack_sizes(data / "blocks" / "packs")
            report.packs = len(packs)
            damaged_packs = _check_places(data, blocks, packs, read_data, report)
            _count_orphans(blocks, packs, report)
            _check_journal(conn, report)
        finally:
            _end_read(conn)  # a repair writes in transactions of its own
        if repair:
            report.repaired = _repair_all(conn, data, blocks, damaged_packs, report)
    finally:
        conn.close()
    return report


def _end_read(conn: sqlite3.Connection) -> None:
    """End the scan's read transaction (SQLite may have ended it already, on damage it met)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.DatabaseError):
            conn.execute("ROLLBACK")  # nothing was written: ending a read either way is the same


def _open(db: Path, writable: bool) -> sqlite3.Connection:
    # Read-only unless repairing: a running server keeps writing, and a check must never get in its way.
    uri = f"file:{db}?mode={'rw' if writable else 'ro'}"
    conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
    conn.row_factory = sqlite3.Row
    register(conn)
    return conn


def _integrity(conn: sqlite3.Connection) -> list[str]:
    try:
        messages = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if messages == ["ok"] else messages


def _block_table(conn: sqlite3.Connection, report: CheckReport) -> dict[bytes, tuple[int, int, int, str, int]]:
    """sha -> (size, stored size, codec, pack, offset) of every stored block; known damage noted."""
    blocks: dict[bytes, tuple[int, int, int, str, int]] = {}
    try:
        for r in conn.execute("SELECT sha256, size, stored_size, codec, pack, offset FROM blocks"):
            blocks[bytes(r[0])] = (r[1], r[2], r[3], r[4], r[5])
        if _has_table(conn, "damaged"):  # a database the current server has not opened yet has none
            for r in conn.execute("SELECT sha256, reason FROM damaged"):
                report.damaged_blocks[bytes(r[0]).hex()] = f"{MARKED_EARLIER}: {r[1]}"
    except sqlite3.DatabaseError as exc:
        report.database.append(f"cannot read the block table: {exc}")
    report.blocks = len(blocks)
    return blocks


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _pack_sizes(packs: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    if packs.is_dir():
        for sub in packs.iterdir():
            for f in sub.glob("*.pack") if sub.is_dir() else ():
                sizes[f.stem] = f.stat().st_size
    return sizes


def _check_places(data: Path, blocks: dict[bytes, tuple[int, int, int, str, int]], packs: dict[str, int],
                  read_data: bool, report: CheckReport) -> set[str]:
    """Every block inside its pack at the recorded place (and, with `read_data`, its bytes whole)."""
    damaged_packs: set[str] = set()
    by_pack: dict[str, list[tuple[bytes, int, int, int]]] = defaultdict(list)
    for sha, (_, stored, codec, pack, offset) in blocks.items():
        by_pack[pack].append((sha, offset, stored, codec))
    for pack, members in by_pack.items():
        size = packs.get(pack)
        for sha, offset, stored, _ in members:
            if size is None:
                reason = f"pack {pack} is missing"
            elif offset + stored > size:
                reason = f"pack {pack} is cut short ({size} bytes; the block ends at {offset + stored})"
            else:
                continue
            report.damaged_blocks[sha.hex()] = reason
            damaged_packs.add(pack)
        if read_data and size is not None:
            bad = _read_pack(pack_file(data / "blocks" / "packs", pack), members, size, report)
            damaged_packs |= {pack} if bad else set()
    return damaged_packs


def _read_pack(path: Path, members: list[tuple[bytes, int, int, int]], size: int, report: CheckReport) -> bool:
    """Read, decompress and hash every block of one pack; True if any is damaged."""
    bad = False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        for sha, *_ in members:
            report.damaged_blocks[sha.hex()] = f"pack {path.stem} cannot be read: {exc.strerror}"
        return True
    try:
        for sha, offset, stored, codec in sorted(members, key=lambda m: m[1]):
            if offset + stored > size:
                continue  # reported already
            reason = _block_fault(sha, os.pread(fd, stored, offset), codec)
            report.blocks_read += 1
            if reason:
                report.damaged_blocks[sha.hex()] = f"{reason} (pack {path.stem}, offset {offset})"
                bad = True
    finally:
        os.close(fd)
    return bad


def _block_fault(sha: bytes, payload: bytes, codec: int) -> str:
    """Why a stored payload is not block `sha`, or '' when it is."""
    if codec == CODEC_ZSTD:
        try:
            # Bounded: a block stored before uploads were bounded may declare gigabytes in its header.
            payload = inflate(payload, MAX_BLOCK)
        except InflateError as exc:
            return f"not valid zstd ({exc})"
    elif codec != CODEC_RAW:
        return f"unknown codec {codec}"
    return "" if hashlib.sha256(payload).digest() == sha else "its SHA-256 does not match"


def _count_orphans(blocks: dict[bytes, tuple[int, int, int, str, int]], packs: dict[str, int],
                   report: CheckReport) -> None:
    used: dict[str, int] = defaultdict(int)
    for _, stored, _, pack, _ in blocks.values():
        used[pack] += stored
    for pack, size in packs.items():
        if pack not in used:
            report.orphan_packs += 1
            report.orphan_bytes += size
        else:
            report.orphan_bytes += max(0, size - used[pack])


def _check_journal(conn: sqlite3.Connection, report: CheckReport) -> None:
    """Every entry's checksum; every block it names present; which file versions lost which blocks."""
    damaged = {bytes.fromhex(s) for s in report.damaged_blocks}
    try:
        if "checksum" not in {r["name"] for r in conn.execute("PRAGMA table_info(journal)")}:
            report.database.append("the journal has no checksums yet: start the server once to add them")
            return
        present = _present_blocks(conn)
        if _has_table(conn, "damaged_entries"):
            report.set_aside = int(conn.execute("SELECT count(*) FROM damaged_entries").fetchone()[0])
        for row in conn.execute("SELECT * FROM journal ORDER BY box_id, seq, path"):
            report.entries += 1
            where = {"box_id": row["box_id"], "seq": row["seq"], "path": row["path"]}
            if row["checksum"] is None or bytes(row["checksum"]) != row_checksum(row):
                report.bad_entries.append(where | {"reason": "checksum does not match"})
                continue
            blob = bytes(row["blocks"])
            digests = [blob[i : i + 32] for i in range(0, len(blob), 32)]
            absent = [d for d in digests if d not in present]
            for d in absent:
                report.damaged_blocks.setdefault(d.hex(), "not in the block table")
            lost = [d.hex() for d in digests if d in damaged or d in absent]
            if lost:
                report.lost.append(where | {"blocks": lost})
    except sqlite3.DatabaseError as exc:
        report.database.append(f"cannot read the journal: {exc}")


def _present_blocks(conn: sqlite3.Connection) -> set[bytes]:
    return {bytes(r[0]) for r in conn.execute("SELECT sha256 FROM blocks")}


def _repair_all(conn: sqlite3.Connection, data: Path, blocks: dict[bytes, tuple[int, int, int, str, int]],
                damaged_packs: set[str], report: CheckReport) -> dict[str, Any]:
    """Mend what the scan found (see the module doc); what was mended, by kind."""
    repaired: dict[str, Any] = {}
    if report.database:
        repaired["database"] = _reindex(conn)
    if report.bad_entries:
        repaired.update(_set_aside_entries(conn, report.bad_entries))
    if damaged_packs or report.damaged_blocks:
        repaired.update(_repair(conn, data, blocks, damaged_packs, report))
    return repaired


def _reindex(conn: sqlite3.Connection) -> list[str]:
    """Rebuild every index (damage in an index is the one kind SQLite can mend in place); the integrity
    check's messages after it (['ok'] when that was all)."""
    try:
        with _transaction(conn):
            conn.execute("REINDEX")
    except sqlite3.DatabaseError as exc:
        return [f"REINDEX failed: {exc}"]
    return _integrity(conn) or ["ok"]


DAMAGED_ENTRIES = """CREATE TABLE IF NOT EXISTS damaged_entries (
    box_id INTEGER NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, op TEXT NOT NULL,
    kind TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
    blocks BLOB NOT NULL, content_hash TEXT NOT NULL, target TEXT, checksum BLOB,
    found REAL NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (box_id, seq, path)) WITHOUT ROWID"""
_ENTRY_COLUMNS = "box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, content_hash, target, checksum"


def _set_aside_entries(conn: sqlite3.Connection, bad: list[dict[str, Any]]) -> dict[str, Any]:
    """Move the journal entries whose checksum fails to `damaged_entries`, and put the head of every path
    they wrote back to its last good revision. Each entry is checked again inside the transaction."""
    moved: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
    with _transaction(conn):
        conn.execute(DAMAGED_ENTRIES)
        for e in bad:
            row = conn.execute("SELECT * FROM journal WHERE box_id = ? AND seq = ? AND path = ?",
                               (e["box_id"], e["seq"], e["path"])).fetchone()
            if row is None or (row["checksum"] is not None and bytes(row["checksum"]) == row_checksum(row)):
                continue
            conn.execute(f"INSERT OR REPLACE INTO damaged_entries ({_ENTRY_COLUMNS}, found, reason) "
                         f"SELECT {_ENTRY_COLUMNS}, ?, ? FROM journal WHERE box_id = ? AND seq = ? AND path = ?",
                         (time.time(), e["reason"], e["box_id"], e["seq"], e["path"]))
            conn.execute("DELETE FROM journal WHERE box_id = ? AND seq = ? AND path = ?",
                         (e["box_id"], e["seq"], e["path"]))
            moved.append(e)
        # The head rows left pointing at an entry that is gone: the true path of a garbled name, or the
        # path of an entry whose block list was garbled. Each goes back to its latest good revision.
        for box_id, seq in sorted({(e["box_id"], e["seq"]) for e in moved}):
            for f in conn.execute(
                    "SELECT path FROM files f WHERE box_id = ? AND rev = ? AND NOT EXISTS (SELECT 1 FROM journal j "
                    "WHERE j.box_id = f.box_id AND j.seq = f.rev AND j.path = f.path)", (box_id, seq)).fetchall():
                heads.append(_head_back(conn, box_id, seq, f["path"]))
    return {"entries_set_aside": moved, "heads_restored": heads}


def _head_back(conn: sqlite3.Connection, box_id: int, seq: int, path: str) -> dict[str, Any]:
    """Point the head of `path` at its latest good revision (none: the path leaves the head)."""
    last = conn.execute("SELECT seq, op FROM journal WHERE box_id = ? AND path = ? ORDER BY seq DESC LIMIT 1",
                        (box_id, path)).fetchone()
    if last is None:
        conn.execute("DELETE FROM files WHERE box_id = ? AND path = ?", (box_id, path))
        return {"box_id": box_id, "path": path, "lost_rev": seq, "head_rev": None, "present": False}
    conn.execute("UPDATE files SET rev = ?, present = ? WHERE box_id = ? AND path = ?",
                 (last["seq"], int(last["op"] == "put"), box_id, path))
    return {"box_id": box_id, "path": path, "lost_rev": seq, "head_rev": last["seq"], "present": last["op"] == "put"}


def _repair(conn: sqlite3.Connection, data: Path, blocks: dict[bytes, tuple[int, int, int, str, int]],
            damaged_packs: set[str], report: CheckReport) -> dict[str, Any]:
    """Salvage the good blocks of damaged packs into a new pack, move the packs aside, mark the rest damaged."""
    packs_dir = data / "blocks" / "packs"
    aside = data / "blocks" / "damaged"
    aside.mkdir(parents=True, exist_ok=True)
    bad = {bytes.fromhex(s) for s in report.damaged_blocks}
    salvage: list[tuple[bytes, bytes]] = []
    for pack in sorted(damaged_packs):
        path = pack_file(packs_dir, pack)
        if not path.exists():
            continue
        content = path.read_bytes()
        for sha, (_, stored, codec, where, offset) in blocks.items():
            if where == pack and sha not in bad and offset + stored <= len(content):
                payload = content[offset : offset + stored]
                if not _block_fault(sha, payload, codec):
                    salvage.append((sha, payload))
    new_pack = _write_salvage(packs_dir, aside, salvage) if salvage else None
    with _transaction(conn):
        at = 0
        for sha, payload in salvage:  # only a row still where the snapshot saw it (not replaced since)
            conn.execute("UPDATE blocks SET pack = ?, offset = ? WHERE sha256 = ? AND pack = ? AND offset = ?",
                         (new_pack, at, sha, blocks[sha][3], blocks[sha][4]))
            at += len(payload)
        conn.execute("CREATE TABLE IF NOT EXISTS damaged (sha256 BLOB PRIMARY KEY, found REAL NOT NULL, "
                     "reason TEXT NOT NULL) WITHOUT ROWID")
        marks = _still_damaged(conn, blocks, report.damaged_blocks)
        conn.executemany("INSERT OR IGNORE INTO damaged (sha256, found, reason) VALUES (?, ?, ?)", marks)
        # A pack is moved aside only once no good block points to it (a fresh upload may have landed there).
        kept = {pack for pack in damaged_packs if conn.execute(
            "SELECT 1 FROM blocks b WHERE b.pack = ? AND NOT EXISTS (SELECT 1 FROM damaged d "
            "WHERE d.sha256 = b.sha256) LIMIT 1", (pack,)).fetchone() is not None}
    moved = []
    for pack in sorted(damaged_packs - kept):
        path = pack_file(packs_dir, pack)
        if path.exists():
            os.replace(path, aside / path.name)
            moved.append(pack)
    return {"packs_moved": moved, "blocks_salvaged": len(salvage), "salvage_pack": new_pack,
            "blocks_marked_damaged": len(marks), "moved_to": str(aside)}


def _still_damaged(conn: sqlite3.Connection, blocks: dict[bytes, tuple[int, int, int, str, int]],
                   damaged: dict[str, str]) -> list[tuple[bytes, float, str]]:
    """(sha, time, reason) of the blocks damaged in the snapshot that still are: a block that a fresh upload
    replaced (or brought) since the snapshot is whole and never marked."""
    now = time.time()
    marks = []
    for hexsha, reason in sorted(damaged.items()):
        if reason.startswith(MARKED_EARLIER):
            continue  # marked already; or healed since, and then whole
        sha = bytes.fromhex(hexsha)
        row = conn.execute("SELECT pack, offset FROM blocks WHERE sha256 = ?", (sha,)).fetchone()
        seen = blocks.get(sha)
        now_at = None if row is None else (row[0], row[1])
        if now_at == (None if seen is None else (seen[3], seen[4])):
            marks.append((sha, now, reason))
    return marks


def _write_salvage(packs_dir: Path, scratch: Path, salvage: list[tuple[bytes, bytes]]) -> str:
    """Write the salvaged payloads as one new pack (temp name beside the damaged ones, fsync, rename)."""
    pack = secrets.token_hex(16)
    temp = scratch / f"{pack}.part"  # not the upload temp folder: the server may be writing there
    with open(temp, "wb") as out:
        for _, payload in salvage:
            out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    final = pack_file(packs_dir, pack)
    final.parent.mkdir(exist_ok=True)
    os.replace(temp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return pack


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT on a connection in autocommit mode (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("ROLLBACK" if kind else "COMMIT")


__all__ = ["CheckReport", "check"]
