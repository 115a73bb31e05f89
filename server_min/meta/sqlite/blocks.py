"""SQL for the block index: where each block rests, who proved to hold it, which were found damaged."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from server_min.blocks.base import Location
from server_min.meta.records import StoredBlock
from server_min.meta.sqlite.conn import BIG_BATCH, Connections, batched

BLOCK = "SELECT sha256, size, codec, pack, offset, stored_size FROM blocks"


def _stored(row: tuple[Any, ...]) -> StoredBlock:
    return StoredBlock(bytes(row[0]), row[1], row[2], Location(row[3], row[4], row[5]))


def block_sizes(conn: sqlite3.Connection, digests: Sequence[bytes]) -> dict[bytes, int]:
    """The plain size of each of `digests` the block store holds (a commit checks many at once)."""
    sizes: dict[bytes, int] = {}
    for part in batched(sorted(digests), BIG_BATCH):
        marks = ",".join("?" * len(part))
        sizes.update(conn.execute(f"SELECT sha256, size FROM blocks WHERE sha256 IN ({marks})", part).fetchall())
    return sizes


def readable_blocks(conn: sqlite3.Connection, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
    """See meta.base.BlockReads.readable_blocks."""
    shares = conn.execute("SELECT box_id, prefix FROM members WHERE user_id = ?", (user_id,)).fetchall()
    # Cheapest proof first; each later query only asks about what is still unproved.
    queries: list[tuple[str, tuple[Any, ...]]] = [
        ("SELECT sha256 FROM uploads WHERE user_id = ? AND sha256 IN ({marks})", (user_id,))]
    queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = ? AND sha256 IN ({marks})",
                 (r[0],)) for r in shares if r[1] == ""]
    queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = ? AND path >= ? AND path < ? "
                 "AND sha256 IN ({marks})", (r[0], r[1] + "/", r[1] + "0"))
                for r in shares if r[1] != ""]
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


class BlocksSql(Connections):
    """The block index of meta.base.BlockIndex."""

    def block(self, digest: bytes) -> StoredBlock | None:
        row = self.conn.execute(f"{BLOCK} WHERE sha256 = ?", (digest,)).fetchone()
        return None if row is None else _stored(row)

    def stored_blocks(self, digests: Sequence[bytes]) -> dict[bytes, StoredBlock]:
        found: dict[bytes, StoredBlock] = {}
        with self.read() as conn:
            for part in batched(digests):
                marks = ",".join("?" * len(part))
                for row in conn.execute(f"{BLOCK} WHERE sha256 IN ({marks})", part):
                    found[bytes(row[0])] = _stored(row)
        return found

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        with self.read() as conn:
            return block_sizes(conn, digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        with self.read() as conn:
            return readable_blocks(conn, user_id, digests)

    def damaged_of(self, digests: Sequence[bytes]) -> set[bytes]:
        conn = self.conn
        if conn.execute("SELECT 1 FROM damaged LIMIT 1").fetchone() is None:
            return set()  # the usual case: one cheap look, not one per batch
        found: set[bytes] = set()
        for part in batched(sorted(digests), BIG_BATCH):
            marks = ",".join("?" * len(part))
            found.update(bytes(r[0]) for r in conn.execute(
                f"SELECT sha256 FROM damaged WHERE sha256 IN ({marks})", part))
        return found

    def add_blocks(self, user_id: int, new: Sequence[StoredBlock], proved: Iterable[bytes],
                   healed: Sequence[bytes] = ()) -> None:
        with self.write() as conn:
            for part in batched(sorted(healed)):
                marks = ",".join("?" * len(part))
                conn.execute(f"DELETE FROM blocks WHERE sha256 IN ({marks})", part)
                conn.execute(f"DELETE FROM damaged WHERE sha256 IN ({marks})", part)
            conn.executemany("INSERT OR IGNORE INTO blocks (sha256, size, stored_size, codec, pack, offset) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             sorted((b.sha256, b.size, b.location.length, b.codec, b.location.pack, b.location.offset)
                                    for b in new))
            conn.executemany("INSERT OR IGNORE INTO uploads (user_id, sha256) VALUES (?, ?)",
                             sorted((user_id, d) for d in proved))

    def mark_damaged(self, found: Iterable[tuple[bytes, str]]) -> None:
        with self.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO damaged (sha256, found, reason) VALUES (?, ?, ?)",
                             [(d, time.time(), reason) for d, reason in found])


__all__ = ["BlocksSql", "block_sizes", "readable_blocks"]
