"""A box's commit transaction on PostgreSQL: the box's row lock, then the conflict check, the new seq and
the journal entries, all in one READ COMMITTED transaction.

The lock is the box's row in `boxes`, taken FOR NO KEY UPDATE when the transaction starts (store.py):
a second commit of the same box, from this process or another, waits there until the first one ends;
commits to other boxes lock other rows and run in parallel. NO KEY UPDATE (the lock an UPDATE of `head`
takes anyway) rather than UPDATE, so that inserts referring to the box (a share, a stage, a link) do not
queue behind a long commit. READ COMMITTED rather than REPEATABLE READ: every statement after the lock
sees what the previous commit of the box wrote (a snapshot taken before the lock would not, and
REPEATABLE READ would fail with a serialization error instead of waiting).

Bulk writes (a first push of 100,000 files commits 100,000 entries: the W5 first-push benchmark) cost a
few round trips, never one per row: journal rows go in by binary COPY, and the head (`files`) and the
block index (`block_paths`) are derived from them inside PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import psycopg

from server_min.integrity import entry_checksum
from server_min.meta.postgres import blocks
from server_min.meta.postgres.conn import no_limit
from server_min.meta.postgres.journal import drop_stage
from server_min.meta.records import CommitDone, NewEntry, PathHead, Stage, StaleChange

JOURNAL_COPY = ("COPY journal (box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, target, checksum) "
                "FROM STDIN (FORMAT BINARY)")
JOURNAL_TYPES = ["int8", "int8", "text", "text", "text", "int8", "int8", "int4", "bytea", "text", "bytea"]

# Staged changes read back for a commit in pages of this many rows (memory stays bounded for any stage).
STAGE_PAGE = 20_000

# The head after commit `seq`: every path it wrote, present or deleted.
FILES_FROM_JOURNAL = (
    "INSERT INTO files (box_id, path, rev, present) SELECT box_id, path, seq, op = 'put' FROM journal "
    "WHERE box_id = %s AND seq = %s "
    "ON CONFLICT (box_id, path) DO UPDATE SET rev = excluded.rev, present = excluded.present")
# Which paths hold which blocks: each block list cut into its 32-byte digests, inserted in key order so the
# B-tree is walked once instead of at random.
BLOCK_PATHS_FROM_JOURNAL = (
    "INSERT INTO block_paths (sha256, box_id, path) SELECT substring(j.blocks FROM i * 32 + 1 FOR 32), "
    "j.box_id, j.path FROM journal j CROSS JOIN LATERAL generate_series(0, length(j.blocks) / 32 - 1) i "
    "WHERE j.box_id = %s AND j.seq = %s ORDER BY 1, 3 ON CONFLICT DO NOTHING")

STAGE_COLUMNS = "path, op, kind, size, mtime_ns, mode, blocks, target"


def _copy_journal(conn: psycopg.Connection[Any], box_id: int, seq: int,
                  entries: Iterable[Sequence[Any]]) -> None:
    """Write the journal rows of commit `seq`, each with its checksum, by one binary COPY."""
    with conn.cursor() as cur, cur.copy(JOURNAL_COPY) as copy:
        copy.set_types(JOURNAL_TYPES)
        write = copy.write_row
        for path, op, kind, size, mtime_ns, mode, blob, target in entries:
            write((box_id, seq, path, op, kind, size, mtime_ns, mode, blob, target,
                   entry_checksum(box_id, seq, path, op, kind, size, mtime_ns, mode, blob, target)))


class PostgresCommitTx:
    """meta.base.CommitTx over one connection inside a transaction holding the box's row lock."""

    def __init__(self, conn: psycopg.Connection[Any], box_id: int) -> None:
        self.conn = conn
        self.box_id = box_id

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params, binary=True).fetchall()

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        return blocks.block_sizes(self.conn, digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        return blocks.readable_blocks(self.conn, user_id, digests)

    def head(self) -> int:
        row = self.conn.execute("SELECT head FROM boxes WHERE id = %s", (self.box_id,)).fetchone()
        return int(row[0]) if row else 0

    def heads_of(self, paths: Sequence[str]) -> dict[str, PathHead]:
        if not paths:
            return {}
        rows = self._rows("SELECT path, rev, present FROM files WHERE box_id = %s AND path = ANY(%b::text[])",
                          (self.box_id, list(paths)))
        return {path: PathHead(rev, present) for path, rev, present in rows}

    def present_kinds(self, paths: Sequence[str]) -> dict[str, str]:
        if not paths:
            return {}
        return dict(self._rows(  # type: ignore[arg-type]
            "SELECT f.path, j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.seq = f.rev "
            "AND j.path = f.path WHERE f.box_id = %s AND f.present AND f.path = ANY(%b::text[])",
            (self.box_id, list(paths))))

    def holding(self, paths: Sequence[str], deeper: bool = False) -> set[str]:
        found: set[str] = set()
        deep = " AND strpos(path, '/') > 0" if deeper else ""
        if "" in paths and self._rows(f"SELECT 1 FROM files WHERE box_id = %s AND present{deep} LIMIT 1",
                                      (self.box_id,)):
            found.add("")
        rest = [p for p in paths if p]
        if rest:
            deep = " AND strpos(substr(f.path, length(q.folder) + 2), '/') > 0" if deeper else ""
            # One statement, one index seek per folder.
            found.update(r[0] for r in self._rows(
                "SELECT q.folder FROM unnest(%b::text[]) q(folder) WHERE EXISTS (SELECT 1 FROM files f "
                "WHERE f.box_id = %s AND f.path >= q.folder || '/' AND f.path < q.folder || '0' "
                f"AND f.present{deep})", (rest, self.box_id)))
        return found

    def present_under(self, folder: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT path FROM files WHERE box_id = %s AND path >= %s AND path < %s AND present ORDER BY path",
            (self.box_id, folder + "/", folder + "0"))]

    def append(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None = None) -> CommitDone:
        seq, now = self._new_commit(user_id, device_id, message, len(entries), key)
        _copy_journal(self.conn, self.box_id, seq,
                      ((e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target) for e in entries))
        self._index(seq)
        return CommitDone(seq, now, len(entries))

    def _new_commit(self, user_id: int, device_id: int | None, message: str, nchanges: int,
                    key: str | None) -> tuple[int, float]:
        """The next seq of the box (its head plus one, read under the box's lock) and its commit row."""
        row = self.conn.execute("UPDATE boxes SET head = head + 1 WHERE id = %s RETURNING head",
                                (self.box_id,)).fetchone()
        if row is None:
            raise LookupError(f"no box {self.box_id}")
        seq, now = int(row[0]), time.time()
        self.conn.execute(
            "INSERT INTO commits (box_id, seq, user_id, device_id, message, time, nchanges, key) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (self.box_id, seq, user_id, device_id, message, now,
                                                        nchanges, key))
        return seq, now

    def _index(self, seq: int) -> None:
        """The head and the block index after the journal rows of commit `seq`, derived in the database."""
        self.conn.execute(FILES_FROM_JOURNAL, (self.box_id, seq))
        self.conn.execute(BLOCK_PATHS_FROM_JOURNAL, (self.box_id, seq))

    # --- stages -------------------------------------------------------------------------------

    def stage(self, stage: int) -> Stage | None:
        # Locked for the rest of the transaction: create_stage, dropping expired stages, skips one in use.
        row = self.conn.execute("SELECT id, box_id, user_id, created FROM stages WHERE id = %s FOR UPDATE",
                                (stage,)).fetchone()
        return None if row is None else Stage(*row)

    def add_staged(self, stage: int, entries: Sequence[NewEntry], parents: Sequence[int]) -> int:
        # A path given twice keeps its last change (an upsert may not touch one row twice in a statement).
        latest = {e.path: (e, parent) for e, parent in zip(entries, parents, strict=True)}
        if latest:
            columns = list(zip(*((e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target, parent)
                                 for e, parent in latest.values()), strict=True))
            self.conn.execute(
                f"INSERT INTO stage_changes (stage, {STAGE_COLUMNS}, parent_rev) SELECT %s, * FROM unnest("
                "%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::int[], %b::bytea[], "
                "%b::text[], %b::bigint[]) ON CONFLICT (stage, path) DO UPDATE SET op = excluded.op, "
                "kind = excluded.kind, size = excluded.size, mtime_ns = excluded.mtime_ns, mode = excluded.mode, "
                "blocks = excluded.blocks, target = excluded.target, parent_rev = excluded.parent_rev",
                (stage, *map(list, columns)))
        row = self.conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = %s", (stage,)).fetchone()
        return int(row[0]) if row else 0

    def add_stage_folders(self, stage: int, folders: Mapping[str, bool]) -> None:
        if not folders:
            return
        names = sorted(folders)
        self.conn.execute(
            "INSERT INTO stage_folders (stage, folder, leaves) SELECT %s, * FROM unnest(%b::text[], %b::bool[]) "
            "ON CONFLICT (stage, folder) DO UPDATE SET leaves = stage_folders.leaves OR excluded.leaves",
            (stage, names, [bool(folders[f]) for f in names]))

    def stage_folders(self, stage: int) -> dict[str, bool]:
        return dict(self._rows("SELECT folder, leaves FROM stage_folders WHERE stage = %s",  # type: ignore[arg-type]
                               (stage,)))

    def staged_kinds(self, stage: int, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        if not paths:
            return {}
        return {r[0]: (r[1], r[2]) for r in self._rows(
            "SELECT path, op, kind FROM stage_changes WHERE stage = %s AND path = ANY(%b::text[])",
            (stage, list(paths)))}

    def staged_under(self, stage: int, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in self._rows(
            "SELECT path, op, kind FROM stage_changes WHERE stage = %s AND path >= %s AND path < %s "
            "ORDER BY path LIMIT %s", (stage, folder + "/", folder + "0", no_limit(limit)))]

    def staged_leaves_holding(self, stage: int, folders: Collection[str]) -> list[str]:
        """One statement, one index seek per staged put of a file or link."""
        holds = ("EXISTS (SELECT 1 FROM files h WHERE h.box_id = %s AND h.path >= s.path || '/' "
                 "AND h.path < s.path || '0' AND h.present)")
        found = []
        if "" in folders:
            found += [r[0] for r in self._rows(
                "SELECT s.path FROM stage_changes s WHERE s.stage = %s AND s.op = 'put' AND s.kind != 'dir' "
                f"AND strpos(s.path, '/') = 0 AND {holds}", (stage, self.box_id))]
        rest = [f for f in folders if f]
        if rest:
            found += [r[0] for r in self._rows(
                "SELECT s.path FROM unnest(%b::text[]) f(folder) JOIN stage_changes s ON s.stage = %s "
                "AND s.path >= f.folder || '/' AND s.path < f.folder || '0' WHERE s.op = 'put' AND s.kind != 'dir' "
                f"AND strpos(substr(s.path, length(f.folder) + 2), '/') = 0 AND {holds}",
                (rest, stage, self.box_id))]
        return sorted(found)

    def staged_outside(self, stage: int, prefix: str) -> bool:
        return bool(self._rows(
            "SELECT 1 FROM stage_changes WHERE stage = %s AND NOT (path >= %s AND path < %s) LIMIT 1",
            (stage, prefix + "/", prefix + "0")))

    def staged_conflicts(self, stage: int) -> list[StaleChange]:
        rows = self._rows(
            "SELECT s.path, s.parent_rev, COALESCE(f.rev, 0), COALESCE(f.present, false) FROM stage_changes s "
            "LEFT JOIN files f ON f.box_id = %s AND f.path = s.path WHERE s.stage = %s AND NOT ("
            "(s.op = 'put' AND (s.parent_rev = COALESCE(f.rev, 0) "
            "OR (NOT COALESCE(f.present, false) AND s.parent_rev = 0))) "
            "OR (s.op = 'delete' AND COALESCE(f.present, false) AND s.parent_rev = f.rev)) ORDER BY s.path",
            (self.box_id, stage))
        return [StaleChange(*r) for r in rows]

    def append_staged(self, stage: int, user_id: int, device_id: int | None, message: str,
                      key: str | None = None) -> CommitDone:
        """The staged rows come out, page by page, only to gain their checksum (xxh3, which PostgreSQL lacks)
        on their way back into the journal by COPY; the rest is derived in the database."""
        conn, box_id = self.conn, self.box_id
        row = conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = %s", (stage,)).fetchone()
        nchanges = int(row[0]) if row else 0
        seq, now = self._new_commit(user_id, device_id, message, nchanges, key)
        # A named (server-side) cursor reads the stage in pages; each page goes back in by its own COPY.
        with conn.cursor(name=f"box_stage_{stage}", binary=True) as staged:
            staged.execute(f"SELECT {STAGE_COLUMNS} FROM stage_changes WHERE stage = %s", (stage,))
            while page := staged.fetchmany(STAGE_PAGE):
                _copy_journal(conn, box_id, seq, page)
        self._index(seq)
        drop_stage(conn, stage)
        return CommitDone(seq, now, nchanges)


__all__ = ["PostgresCommitTx"]
