"""A box's commit transaction on SQLite: the conflict check, the new seq and the journal entries in one
BEGIN IMMEDIATE, which also keeps every other writer out (SQLite has one writer at a time)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence

from server_min.integrity import entry_checksum
from server_min.meta.records import CommitDone, NewEntry, PathHead, Stage, StaleChange
from server_min.meta.sqlite import blocks
from server_min.meta.sqlite.conn import BIG_BATCH, batched
from server_min.meta.sqlite.journal import drop_stage


def _blocks_by_path(entries: Iterable[tuple[str, bytes]]) -> list[tuple[bytes, str]]:
    """(block, path) for every block of (path, blocks) pairs, in key order: B-tree inserts then walk the
    index once instead of jumping around it."""
    return sorted((blob[i : i + 32], path) for path, blob in entries for i in range(0, len(blob), 32))


class SqliteCommitTx:
    """meta.base.CommitTx over one connection inside BEGIN IMMEDIATE."""

    def __init__(self, conn: sqlite3.Connection, box_id: int) -> None:
        self.conn = conn
        self.box_id = box_id

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        return blocks.block_sizes(self.conn, digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        return blocks.readable_blocks(self.conn, user_id, digests)

    def head(self) -> int:
        row = self.conn.execute("SELECT head FROM boxes WHERE id = ?", (self.box_id,)).fetchone()
        return int(row[0]) if row else 0

    def heads_of(self, paths: Sequence[str]) -> dict[str, PathHead]:
        heads: dict[str, PathHead] = {}
        for part in batched(paths):
            marks = ",".join("?" * len(part))
            query = f"SELECT path, rev, present FROM files WHERE box_id = ? AND path IN ({marks})"
            for path, rev, present in self.conn.execute(query, (self.box_id, *part)):
                heads[path] = PathHead(rev, bool(present))
        return heads

    def present_kinds(self, paths: Sequence[str]) -> dict[str, str]:
        kinds: dict[str, str] = {}
        for part in batched(paths):
            marks = ",".join("?" * len(part))
            kinds.update(self.conn.execute(
                "SELECT f.path, j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.seq = f.rev "
                f"AND j.path = f.path WHERE f.box_id = ? AND f.present = 1 AND f.path IN ({marks})",
                (self.box_id, *part)).fetchall())
        return kinds

    def holding(self, paths: Sequence[str], deeper: bool = False) -> set[str]:
        conn, box_id = self.conn, self.box_id
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

    def present_under(self, folder: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT path FROM files WHERE box_id = ? AND path >= ? AND path < ? AND present = 1 ORDER BY path",
            (self.box_id, folder + "/", folder + "0"))]

    def append(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None = None) -> CommitDone:
        conn, box_id = self.conn, self.box_id
        seq, now = self._new_commit(user_id, device_id, message, len(entries), key)
        conn.executemany(
            "INSERT INTO journal (box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, content_hash, target, "
            "checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, "", e.target,
              entry_checksum(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target))
             for e in entries])
        conn.executemany("INSERT INTO files (box_id, path, rev, present) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (box_id, path) DO UPDATE SET rev = excluded.rev, present = excluded.present",
                         [(box_id, e.path, seq, int(e.op == "put")) for e in entries])
        conn.executemany("INSERT OR IGNORE INTO block_paths (sha256, box_id, path) VALUES (?, ?, ?)",
                         [(d, box_id, path) for d, path in _blocks_by_path((e.path, e.blocks) for e in entries)])
        return CommitDone(seq, now, len(entries))

    def _new_commit(self, user_id: int, device_id: int | None, message: str, nchanges: int,
                    key: str | None) -> tuple[int, float]:
        seq = self.head() + 1
        now = time.time()
        self.conn.execute(
            "INSERT INTO commits (box_id, seq, user_id, device_id, message, time, nchanges, key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (self.box_id, seq, user_id, device_id, message, now, nchanges, key))
        self.conn.execute("UPDATE boxes SET head = ? WHERE id = ?", (seq, self.box_id))
        return seq, now

    # --- stages -------------------------------------------------------------------------------

    def stage(self, stage: int) -> Stage | None:
        row = self.conn.execute("SELECT id, box_id, user_id, created FROM stages WHERE id = ?", (stage,)).fetchone()
        return None if row is None else Stage(*row)

    def add_staged(self, stage: int, entries: Sequence[NewEntry], parents: Sequence[int]) -> int:
        self.conn.executemany(
            "INSERT OR REPLACE INTO stage_changes (stage, path, op, kind, size, mtime_ns, mode, blocks, "
            "target, parent_rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(stage, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target, parent)
             for e, parent in zip(entries, parents, strict=True)])
        return int(self.conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = ?", (stage,)).fetchone()[0])

    def add_stage_folders(self, stage: int, folders: Mapping[str, bool]) -> None:
        self.conn.executemany("INSERT INTO stage_folders (stage, folder, leaves) VALUES (?, ?, ?) "
                              "ON CONFLICT (stage, folder) DO UPDATE SET leaves = MAX(leaves, excluded.leaves)",
                              [(stage, f, int(leaves)) for f, leaves in sorted(folders.items())])

    def stage_folders(self, stage: int) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.conn.execute(
            "SELECT folder, leaves FROM stage_folders WHERE stage = ?", (stage,))}

    def staged_kinds(self, stage: int, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for part in batched(list(paths)):
            marks = ",".join("?" * len(part))
            found.update((r[0], (r[1], r[2])) for r in self.conn.execute(
                f"SELECT path, op, kind FROM stage_changes WHERE stage = ? AND path IN ({marks})", (stage, *part)))
        return found

    def staged_under(self, stage: int, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT path, op, kind FROM stage_changes WHERE stage = ? AND path >= ? AND path < ? "
            "ORDER BY path LIMIT ?", (stage, folder + "/", folder + "0", limit))]

    def staged_leaves_holding(self, stage: int, folders: Collection[str]) -> list[str]:
        """One statement, one index seek per staged put of a file or link."""
        holds = ("EXISTS (SELECT 1 FROM files h WHERE h.box_id = ? AND h.path >= s.path || '/' "
                 "AND h.path < s.path || '0' AND h.present = 1)")
        found = []
        if "" in folders:
            found += [r[0] for r in self.conn.execute(
                "SELECT s.path FROM stage_changes s WHERE s.stage = ? AND s.op = 'put' AND s.kind != 'dir' "
                f"AND instr(s.path, '/') = 0 AND {holds}", (stage, self.box_id))]
        rest = [f for f in folders if f]
        for part in batched(rest, BIG_BATCH):
            found += [r[0] for r in self.conn.execute(
                "SELECT s.path FROM json_each(?) f JOIN stage_changes s ON s.stage = ? AND s.path >= f.value || '/' "
                "AND s.path < f.value || '0' WHERE s.op = 'put' AND s.kind != 'dir' "
                f"AND instr(substr(s.path, length(f.value) + 2), '/') = 0 AND {holds}",
                (json.dumps(list(part)), stage, self.box_id))]
        return sorted(found)

    def staged_outside(self, stage: int, prefix: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM stage_changes WHERE stage = ? AND NOT (path >= ? AND path < ?) LIMIT 1",
            (stage, prefix + "/", prefix + "0")).fetchone() is not None

    def staged_conflicts(self, stage: int) -> list[StaleChange]:
        rows = self.conn.execute(
            "SELECT s.path, s.parent_rev, COALESCE(f.rev, 0), COALESCE(f.present, 0) "
            "FROM stage_changes s LEFT JOIN files f ON f.box_id = ? AND f.path = s.path WHERE s.stage = ? AND NOT ("
            "(s.op = 'put' AND (s.parent_rev = COALESCE(f.rev, 0) "
            "OR (COALESCE(f.present, 0) = 0 AND s.parent_rev = 0))) "
            "OR (s.op = 'delete' AND COALESCE(f.present, 0) = 1 AND s.parent_rev = f.rev)) ORDER BY s.path",
            (self.box_id, stage)).fetchall()
        return [StaleChange(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def append_staged(self, stage: int, user_id: int, device_id: int | None, message: str,
                      key: str | None = None) -> CommitDone:
        """The changes move from table to table inside SQLite."""
        conn, box_id = self.conn, self.box_id
        nchanges = int(conn.execute("SELECT COUNT(*) FROM stage_changes WHERE stage = ?", (stage,)).fetchone()[0])
        seq, now = self._new_commit(user_id, device_id, message, nchanges, key)
        conn.execute(
            "INSERT INTO journal (box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, content_hash, target, "
            "checksum) SELECT ?1, ?2, path, op, kind, size, mtime_ns, mode, blocks, '', target, "
            "box_checksum(?1, ?2, path, op, kind, size, mtime_ns, mode, blocks, target) FROM stage_changes "
            "WHERE stage = ?3", (box_id, seq, stage))
        conn.execute(
            "INSERT INTO files (box_id, path, rev, present) SELECT ?, path, ?, op = 'put' FROM stage_changes "
            "WHERE stage = ? ON CONFLICT (box_id, path) DO UPDATE SET rev = excluded.rev, present = excluded.present",
            (box_id, seq, stage))
        # Which blocks each path holds is worked out from the staged block lists only now: a table of
        # (block, path) filled while staging took a random-key insert per block in every part's transaction.
        # A file of one block, most files, is its own row; only longer lists are split, here in Python.
        conn.execute(
            "INSERT OR IGNORE INTO block_paths (sha256, box_id, path) "
            "SELECT blocks, ?, path FROM stage_changes WHERE stage = ? AND length(blocks) = 32 ORDER BY blocks",
            (box_id, stage))
        staged = conn.execute("SELECT path, blocks FROM stage_changes WHERE stage = ? AND length(blocks) > 32",
                              (stage,))
        conn.executemany("INSERT OR IGNORE INTO block_paths (sha256, box_id, path) VALUES (?, ?, ?)",
                         [(d, box_id, path) for d, path in _blocks_by_path((r[0], r[1]) for r in staged)])
        drop_stage(conn, stage)
        return CommitDone(seq, now, nchanges)


__all__ = ["SqliteCommitTx"]
