"""SQL for the head of a box and its journal as a member of one folder sees them, and for links."""

from __future__ import annotations

import time
from typing import Any

from server_min.meta.records import CommitInfo, Entry, Link, LinkListing
from server_min.meta.sqlite.conn import ENTRY, J_ENTRY, Connections, entries, range_under
from server_min.meta.sqlite.journal import COMMIT, commit_info

# The present version of a path: its row in `files` joined to the journal entry that wrote it.
CURRENT = (f"SELECT {J_ENTRY} FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path "
           "AND j.seq = f.rev WHERE f.box_id = ? AND f.present = 1")
LINK = "SELECT id, token_hash, box_id, path, user_id, created, expires, revoked FROM links"


def _link(row: Any) -> Link | None:
    return None if row is None else Link(*row[:8])


class FoldersSql(Connections):
    """Folder-scoped reads of meta.base.JournalStore, and meta.base.LinkStore."""

    def path_state(self, box_id: int, path: str) -> str | None:
        conn = self.conn
        row = conn.execute(
            "SELECT j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path AND j.seq = f.rev "
            "WHERE f.box_id = ? AND f.path = ? AND f.present = 1", (box_id, path)).fetchone()
        if row is not None:
            return str(row[0])
        lo, hi = range_under(path)
        under = conn.execute("SELECT 1 FROM files WHERE box_id = ? AND path >= ? AND path < ? AND present = 1 "
                             "LIMIT 1", (box_id, lo, hi)).fetchone()
        return "dir" if under is not None or path == "" else None

    def current(self, box_id: int, path: str) -> Entry | None:
        found = entries(self.conn, f"{CURRENT} AND f.path = ?", (box_id, path))
        return found[0] if found else None

    def current_under(self, box_id: int, prefix: str) -> list[Entry]:
        lo, hi = range_under(prefix)
        return entries(self.conn, f"{CURRENT} AND f.path >= ? AND f.path < ? ORDER BY f.path", (box_id, lo, hi))

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        lo, hi = range_under(prefix)
        row = self.conn.execute("SELECT MAX(seq) FROM journal WHERE box_id = ? AND seq > ? AND path >= ? "
                                "AND path < ?", (box_id, after, lo, hi)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def head_under(self, box_id: int, prefix: str) -> int:
        lo, hi = range_under(prefix)
        row = self.conn.execute("SELECT MAX(rev) FROM files WHERE box_id = ? AND path >= ? AND path < ?",
                                (box_id, lo, hi)).fetchone()
        return int(row[0] or 0)

    def count_under(self, box_id: int, prefix: str, cursor: int) -> int:
        lo, hi = range_under(prefix)
        row = self.conn.execute("SELECT COUNT(*) FROM journal WHERE box_id = ? AND seq > ? AND path >= ? AND path < ?",
                                (box_id, cursor, lo, hi)).fetchone()
        return int(row[0])

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[CommitInfo]:
        lo, hi = range_under(prefix)
        return [commit_info(r) for r in self.conn.execute(
            f"{COMMIT} WHERE c.box_id = ? AND c.seq < ? AND c.seq IN (SELECT DISTINCT seq FROM journal "
            "WHERE box_id = ? AND path >= ? AND path < ?) ORDER BY c.seq DESC LIMIT ?",
            (box_id, before if before is not None else 1 << 62, box_id, lo, hi, limit))]

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[Entry], int]:
        lo, hi = range_under(prefix)
        with self.read() as conn:
            found = entries(conn, f"SELECT {ENTRY} FROM journal WHERE box_id = ? AND seq = ? AND path >= ? "
                                  "AND path < ? ORDER BY path LIMIT ?", (box_id, seq, lo, hi, limit))
            total = conn.execute("SELECT COUNT(*) FROM journal WHERE box_id = ? AND seq = ? AND path >= ? "
                                 "AND path < ?", (box_id, seq, lo, hi)).fetchone()[0]
        return found, int(total)

    # --- links ------------------------------------------------------------------------------

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int:
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO links (token_hash, box_id, path, user_id, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, box_id, path, user_id, time.time(), expires))
            return int(cur.lastrowid or 0)

    def link(self, link_id: int) -> Link | None:
        return _link(self.conn.execute(f"{LINK} WHERE id = ?", (link_id,)).fetchone())

    def link_by_hash(self, token_hash: str) -> Link | None:
        return _link(self.conn.execute(f"{LINK} WHERE token_hash = ?", (token_hash,)).fetchone())

    def links_for(self, user_id: int, box_id: int | None) -> list[LinkListing]:
        rows = self.conn.execute(
            "SELECT l.id, l.token_hash, l.box_id, l.path, l.user_id, l.created, l.expires, l.revoked, b.name, o.name, "
            "u.name FROM links l JOIN boxes b ON b.id = l.box_id JOIN users o ON o.id = b.owner_id "
            "JOIN users u ON u.id = l.user_id WHERE (l.user_id = ? OR b.owner_id = ?) AND (? IS NULL OR l.box_id = ?) "
            "ORDER BY l.id", (user_id, user_id, box_id, box_id))
        return [LinkListing(Link(*r[:8]), r[8], r[9], r[10]) for r in rows]

    def revoke_link(self, link_id: int) -> None:
        with self.write() as conn:
            conn.execute("UPDATE links SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), link_id))


__all__ = ["FoldersSql"]
