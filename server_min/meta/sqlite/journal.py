"""SQL reading the journal: pages of changes, snapshots, history, and the commit a key made."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from server_min.meta.base import STAGE_TTL
from server_min.meta.records import CommitDone, CommitInfo, Entry, Revision
from server_min.meta.sqlite.conn import ENTRY, J_ENTRY, Connections, entries

# A commit with who made it, from which device (columns of records.CommitInfo).
COMMIT = ("SELECT c.seq, c.time, u.name, d.name, c.device_id, c.message, c.nchanges FROM commits c "
          "JOIN users u ON u.id = c.user_id LEFT JOIN devices d ON d.id = c.device_id")


def commit_info(row: Any) -> CommitInfo:
    return CommitInfo(*row[:7])


def drop_stage(conn: Any, stage: int) -> None:
    conn.execute("DELETE FROM stage_changes WHERE stage = ?", (stage,))
    conn.execute("DELETE FROM stage_folders WHERE stage = ?", (stage,))
    conn.execute("DELETE FROM stages WHERE id = ?", (stage,))


class JournalSql(Connections):
    """The reads of meta.base.JournalStore over the whole box, and stage creation."""

    def create_stage(self, box_id: int, user_id: int) -> int:
        with self.write() as conn:
            old = [r[0] for r in conn.execute("SELECT id FROM stages WHERE created < ?", (time.time() - STAGE_TTL,))]
            for stage in old:
                drop_stage(conn, stage)
            cur = conn.execute("INSERT INTO stages (box_id, user_id, created) VALUES (?, ?, ?)",
                               (box_id, user_id, time.time()))
            return int(cur.lastrowid or 0)

    def commit_by_key(self, box_id: int, key: str) -> CommitDone | None:
        row = self.conn.execute("SELECT seq, time, nchanges FROM commits WHERE box_id = ? AND key = ?",
                                (box_id, key)).fetchone()
        return None if row is None else CommitDone(row[0], row[1], row[2])

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[Entry], int]:
        with self.read() as conn:
            # Find the last seq whose entries still fit in the page, but always take at least one commit.
            upto = cursor
            total = 0
            for seq, nchanges in conn.execute(
                    "SELECT seq, nchanges FROM commits WHERE box_id = ? AND seq > ? ORDER BY seq", (box_id, cursor)):
                if total and total + nchanges > limit:
                    break
                upto = seq
                total += nchanges
            found = entries(conn, f"SELECT {ENTRY} FROM journal WHERE box_id = ? AND seq > ? AND seq <= ? "
                                  "ORDER BY seq, path", (box_id, cursor, upto))
            return found, upto

    def tree(self, box_id: int, seq: int, prefix: str) -> list[Entry]:
        lo, hi = (prefix + "/", prefix + "0") if prefix else ("", "\U0010ffff")
        with self.read() as conn:
            return entries(
                conn,
                f"SELECT {J_ENTRY} FROM journal j JOIN (SELECT path, MAX(seq) AS seq FROM journal "
                "WHERE box_id = ? AND seq <= ? AND ((path >= ? AND path < ?) OR path = ?) GROUP BY path) x "
                "ON j.box_id = ? AND j.path = x.path AND j.seq = x.seq WHERE j.op = 'put' ORDER BY j.path",
                (box_id, seq, lo, hi, prefix, box_id))

    def seq_at(self, box_id: int, when: float) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM commits WHERE box_id = ? AND time <= ?",
                                (box_id, when)).fetchone()
        return int(row[0] or 0)

    def commits(self, box_id: int, limit: int, before: int | None) -> list[CommitInfo]:
        return [commit_info(r) for r in self.conn.execute(
            f"{COMMIT} WHERE c.box_id = ? AND c.seq < ? ORDER BY c.seq DESC LIMIT ?",
            (box_id, before if before is not None else 1 << 62, limit))]

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[Entry]:
        return entries(self.conn, f"SELECT {ENTRY} FROM journal WHERE box_id = ? AND seq = ? ORDER BY path LIMIT ?",
                       (box_id, seq, limit))

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[Revision]:
        lo, hi = prefix + "/", prefix + "0"
        rows = self.conn.execute(
            f"SELECT {J_ENTRY}, c.seq, c.time, u.name, d.name, c.device_id, c.message, c.nchanges FROM journal j "
            "JOIN commits c ON c.box_id = j.box_id AND c.seq = j.seq JOIN users u ON u.id = c.user_id "
            "LEFT JOIN devices d ON d.id = c.device_id WHERE j.box_id = ? AND (j.path = ? OR (j.path >= ? "
            "AND j.path < ?)) ORDER BY j.seq DESC, j.path LIMIT ?", (box_id, prefix, lo, hi, limit)).fetchall()
        return [Revision(Entry._make(tuple(r)[:11]), commit_info(tuple(r)[11:])) for r in rows]

    def present_before(self, box_id: int, seq: int, paths: Sequence[str]) -> set[str]:
        with self.read() as conn:  # one indexed look-up per path (journal_path): a log shows a few hundred
            present = set()
            for path in dict.fromkeys(paths):
                row = conn.execute("SELECT op FROM journal WHERE box_id = ? AND path = ? AND seq < ? "
                                   "ORDER BY seq DESC LIMIT 1", (box_id, path, seq)).fetchone()
                if row is not None and row[0] == "put":
                    present.add(path)
            return present

    def count_after(self, box_id: int, cursor: int) -> int:
        row = self.conn.execute("SELECT COALESCE(SUM(nchanges), 0) FROM commits WHERE box_id = ? AND seq > ?",
                                (box_id, cursor)).fetchone()
        return int(row[0])


__all__ = ["COMMIT", "JournalSql", "commit_info", "drop_stage"]
