"""SQL reading the journal: pages of changes, snapshots, history, and the commit a key made."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg

from server_min.meta.base import STAGE_TTL
from server_min.meta.postgres.conn import ENTRY, J_ENTRY, Connections, entries, range_under
from server_min.meta.records import CommitDone, CommitInfo, Entry, Revision

# A commit with who made it, from which device (columns of records.CommitInfo).
COMMIT = ("SELECT c.seq, c.time, u.name, d.name, c.device_id, c.message, c.nchanges FROM commits c "
          "JOIN users u ON u.id = c.user_id LEFT JOIN devices d ON d.id = c.device_id")

# No seq is this high: "before" for a listing from the newest commit.
NO_SEQ = 1 << 62


def commit_info(row: Any) -> CommitInfo:
    return CommitInfo(*row[:7])


def drop_stage(conn: psycopg.Connection[Any], stage: int) -> None:
    """Forget a stage and everything staged in it."""
    conn.execute("DELETE FROM stage_changes WHERE stage = %s", (stage,))
    conn.execute("DELETE FROM stage_folders WHERE stage = %s", (stage,))
    conn.execute("DELETE FROM stages WHERE id = %s", (stage,))


class JournalPg(Connections):
    """The reads of meta.base.JournalStore over the whole box, and stage creation."""

    def create_stage(self, box_id: int, user_id: int) -> int:
        with self.write() as conn:
            now = time.time()
            # SKIP LOCKED: two processes dropping the same expired stages do not wait for each other.
            old = conn.execute("SELECT id FROM stages WHERE created < %s FOR UPDATE SKIP LOCKED",
                               (now - STAGE_TTL,)).fetchall()
            if old:
                ids = [r[0] for r in old]
                conn.execute("DELETE FROM stage_changes WHERE stage = ANY(%b::bigint[])", (ids,))
                conn.execute("DELETE FROM stage_folders WHERE stage = ANY(%b::bigint[])", (ids,))
                conn.execute("DELETE FROM stages WHERE id = ANY(%b::bigint[])", (ids,))
            row = conn.execute("INSERT INTO stages (box_id, user_id, created) VALUES (%s, %s, %s) RETURNING id",
                               (box_id, user_id, now)).fetchone()
            assert row is not None
            return int(row[0])

    def commit_by_key(self, box_id: int, key: str) -> CommitDone | None:
        row = self.one("SELECT seq, time, nchanges FROM commits WHERE box_id = %s AND key = %s", (box_id, key))
        return None if row is None else CommitDone(*row)

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[Entry], int]:
        with self.read() as conn:
            # The last seq whose entries still fit in the page, but always at least one commit. Commits are
            # never changed once written, so the two statements need no common snapshot; a commit holds one
            # change or more, so no page spans more than `limit` commits.
            upto = cursor
            total = 0
            for seq, nchanges in conn.execute(
                    "SELECT seq, nchanges FROM commits WHERE box_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                    (box_id, cursor, max(limit, 1))):
                if total and total + nchanges > limit:
                    break
                upto = seq
                total += nchanges
            if upto == cursor:
                return [], cursor
            found = entries(conn, f"SELECT {ENTRY} FROM journal WHERE box_id = %s AND seq > %s AND seq <= %s "
                                  "ORDER BY seq, path", (box_id, cursor, upto))
            return found, upto

    def tree(self, box_id: int, seq: int, prefix: str) -> list[Entry]:
        lo, hi = range_under(prefix)
        # The latest version of each path at `seq` (DISTINCT ON walks journal_path once), kept if it is a put.
        return self.entries(
            f"SELECT {ENTRY} FROM (SELECT DISTINCT ON (path) {ENTRY} FROM journal WHERE box_id = %s AND seq <= %s "
            "AND ((path >= %s AND path < %s) OR path = %s) ORDER BY path, seq DESC) v WHERE op = 'put' ORDER BY path",
            (box_id, seq, lo, hi, prefix))

    def seq_at(self, box_id: int, when: float) -> int:
        row = self.one("SELECT MAX(seq) FROM commits WHERE box_id = %s AND time <= %s", (box_id, when))
        return int(row[0] or 0) if row else 0

    def commits(self, box_id: int, limit: int, before: int | None) -> list[CommitInfo]:
        return [commit_info(r) for r in self.rows(
            f"{COMMIT} WHERE c.box_id = %s AND c.seq < %s ORDER BY c.seq DESC LIMIT %s",
            (box_id, before if before is not None else NO_SEQ, limit))]

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[Entry]:
        return self.entries(f"SELECT {ENTRY} FROM journal WHERE box_id = %s AND seq = %s ORDER BY path LIMIT %s",
                            (box_id, seq, limit))

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[Revision]:
        lo, hi = prefix + "/", prefix + "0"
        rows = self.rows(
            f"SELECT {J_ENTRY}, c.seq, c.time, u.name, d.name, c.device_id, c.message, c.nchanges FROM journal j "
            "JOIN commits c ON c.box_id = j.box_id AND c.seq = j.seq JOIN users u ON u.id = c.user_id "
            "LEFT JOIN devices d ON d.id = c.device_id WHERE j.box_id = %s AND (j.path = %s OR (j.path >= %s "
            "AND j.path < %s)) ORDER BY j.seq DESC, j.path LIMIT %s", (box_id, prefix, lo, hi, limit))
        return [Revision(Entry._make(r[:11]), commit_info(r[11:])) for r in rows]

    def present_before(self, box_id: int, seq: int, paths: Sequence[str]) -> set[str]:
        if not paths:
            return set()
        rows = self.rows("SELECT DISTINCT ON (path) path, op FROM journal WHERE box_id = %s AND path = ANY(%s) "
                         "AND seq < %s ORDER BY path, seq DESC", (box_id, list(dict.fromkeys(paths)), seq))
        return {path for path, op in rows if op == "put"}

    def count_after(self, box_id: int, cursor: int) -> int:
        row = self.one("SELECT COALESCE(SUM(nchanges), 0) FROM commits WHERE box_id = %s AND seq > %s",
                       (box_id, cursor))
        return int(row[0]) if row else 0


__all__ = ["COMMIT", "NO_SEQ", "JournalPg", "commit_info", "drop_stage"]
