"""SQL for the block index: where each block rests, who proved to hold it, which were found damaged.

A list of digests travels as one BYTEA[] parameter (`= ANY(...)`, or `unnest(...)` for inserts): one statement
and one round trip for thousands of blocks, where SQLite needs batches of bound variables. See conn.py for
why such parameters are sent in binary (%b).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from server_min.blocks.base import Location
from server_min.meta.postgres.conn import Connections
from server_min.meta.records import StoredBlock

BLOCK = "SELECT sha256, size, codec, pack, pack_offset, stored_size FROM blocks"


def _stored(row: tuple[Any, ...]) -> StoredBlock:
    return StoredBlock(row[0], row[1], row[2], Location(row[3], row[4], row[5]))


def block_sizes(conn: psycopg.Connection[Any], digests: Sequence[bytes]) -> dict[bytes, int]:
    """The plain size of each of `digests` the block store holds (a commit checks many at once)."""
    if not digests:
        return {}
    rows = conn.execute("SELECT sha256, size FROM blocks WHERE sha256 = ANY(%b::bytea[])", (sorted(digests),),
                        binary=True).fetchall()
    return dict(rows)  # type: ignore[arg-type]


def readable_blocks(conn: psycopg.Connection[Any], user_id: int, digests: Sequence[bytes]) -> set[bytes]:
    """See meta.base.BlockReads.readable_blocks."""
    if not digests:
        return set()
    shares = conn.execute("SELECT box_id, prefix FROM members WHERE user_id = %s", (user_id,)).fetchall()
    # Cheapest proof first; each later query only asks about what is still unproved.
    queries: list[tuple[str, tuple[Any, ...]]] = [("SELECT sha256 FROM uploads WHERE user_id = %s", (user_id,))]
    queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = %s", (box,))
                for box, prefix in shares if prefix == ""]
    queries += [("SELECT DISTINCT sha256 FROM block_paths WHERE box_id = %s AND path >= %s AND path < %s",
                 (box, prefix + "/", prefix + "0")) for box, prefix in shares if prefix != ""]
    readable: set[bytes] = set()
    rest = sorted(set(digests))  # in key order, so lookups walk the index forward
    for sql, params in queries:
        if not rest:
            break
        readable.update(r[0] for r in conn.execute(f"{sql} AND sha256 = ANY(%b::bytea[])", (*params, rest),
                                                           binary=True))
        rest = [d for d in rest if d not in readable]
    return readable


class BlocksPg(Connections):
    """The block index of meta.base.BlockIndex."""

    def block(self, digest: bytes) -> StoredBlock | None:
        row = self.one(f"{BLOCK} WHERE sha256 = %s", (digest,))
        return None if row is None else _stored(row)

    def stored_blocks(self, digests: Sequence[bytes]) -> dict[bytes, StoredBlock]:
        if not digests:
            return {}
        return {r[0]: _stored(r) for r in self.rows(f"{BLOCK} WHERE sha256 = ANY(%b::bytea[])", (list(digests),))}

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        with self.read() as conn:
            return block_sizes(conn, digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        with self.read() as conn:
            return readable_blocks(conn, user_id, digests)

    def damaged_of(self, digests: Sequence[bytes]) -> set[bytes]:
        if not digests:
            return set()
        return {r[0] for r in self.rows("SELECT sha256 FROM damaged WHERE sha256 = ANY(%b::bytea[])", (list(digests),))}

    def add_blocks(self, user_id: int, new: Sequence[StoredBlock], proved: Iterable[bytes],
                   healed: Sequence[bytes] = ()) -> None:
        rows = sorted((b.sha256, b.size, b.location.length, b.codec, b.location.pack, b.location.offset) for b in new)
        proved = sorted(set(proved))
        with self.write() as conn:
            if healed:
                conn.execute("DELETE FROM blocks WHERE sha256 = ANY(%b::bytea[])", (list(healed),))
                conn.execute("DELETE FROM damaged WHERE sha256 = ANY(%b::bytea[])", (list(healed),))
            if rows:
                # Sorted, and one statement: a block known already keeps its first home.
                conn.execute(
                    "INSERT INTO blocks (sha256, size, stored_size, codec, pack, pack_offset) "
                    "SELECT * FROM unnest(%b::bytea[], %b::bigint[], %b::bigint[], %b::int[], %b::text[], "
                    "%b::bigint[]) ON CONFLICT DO NOTHING", [list(c) for c in zip(*rows, strict=True)])
            if proved:
                conn.execute("INSERT INTO uploads (user_id, sha256) SELECT %s, d FROM unnest(%b::bytea[]) d "
                             "ON CONFLICT DO NOTHING", (user_id, proved))

    def mark_damaged(self, found: Iterable[tuple[bytes, str]]) -> None:
        found = list(found)
        if not found:
            return
        self.execute("INSERT INTO damaged (sha256, found, reason) SELECT d, %s, r FROM unnest(%b::bytea[], "
                     "%b::text[]) AS f(d, r) ON CONFLICT DO NOTHING",
                     (time.time(), [d for d, _ in found], [r for _, r in found]))


__all__ = ["BlocksPg", "block_sizes", "readable_blocks"]
