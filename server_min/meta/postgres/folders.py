"""SQL for the head of a box and its journal as a member of one folder sees them, and for links."""

from __future__ import annotations

import time
from typing import Any

from server_min.meta.postgres.conn import ENTRY, J_ENTRY, Connections, entries, range_under
from server_min.meta.postgres.journal import COMMIT, NO_SEQ, commit_info
from server_min.meta.records import CommitInfo, Entry, Link, LinkListing

# The present version of a path: its row in `files` joined to the journal entry that wrote it.
CURRENT = (f"SELECT {J_ENTRY} FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path "
           "AND j.seq = f.rev WHERE f.box_id = %s AND f.present")
LINK = "SELECT id, token_hash, box_id, path, user_id, created, expires, revoked FROM links"


def _link(row: Any) -> Link | None:
    return None if row is None else Link(*row[:8])


class FoldersPg(Connections):
    """Folder-scoped reads of meta.base.JournalStore, and meta.base.LinkStore."""

    def path_state(self, box_id: int, path: str) -> str | None:
        lo, hi = range_under(path)
        # The path's own kind if present, else 'dir' if anything is present under it: one round trip.
        row = self.one(
            "SELECT (SELECT j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path "
            "AND j.seq = f.rev WHERE f.box_id = %s AND f.path = %s AND f.present), "
            "EXISTS (SELECT 1 FROM files WHERE box_id = %s AND path >= %s AND path < %s AND present)",
            (box_id, path, box_id, lo, hi))
        assert row is not None
        if row[0] is not None:
            return str(row[0])
        return "dir" if row[1] or path == "" else None

    def current(self, box_id: int, path: str) -> Entry | None:
        found = self.entries(f"{CURRENT} AND f.path = %s", (box_id, path))
        return found[0] if found else None

    def current_under(self, box_id: int, prefix: str) -> list[Entry]:
        lo, hi = range_under(prefix)
        return self.entries(f"{CURRENT} AND f.path >= %s AND f.path < %s ORDER BY f.path", (box_id, lo, hi))

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        lo, hi = range_under(prefix)
        row = self.one("SELECT MAX(seq) FROM journal WHERE box_id = %s AND seq > %s AND path >= %s AND path < %s",
                       (box_id, after, lo, hi))
        return int(row[0]) if row and row[0] is not None else None

    def head_under(self, box_id: int, prefix: str) -> int:
        lo, hi = range_under(prefix)
        row = self.one("SELECT MAX(rev) FROM files WHERE box_id = %s AND path >= %s AND path < %s", (box_id, lo, hi))
        return int(row[0] or 0) if row else 0

    def count_under(self, box_id: int, prefix: str, cursor: int) -> int:
        lo, hi = range_under(prefix)
        row = self.one("SELECT COUNT(*) FROM journal WHERE box_id = %s AND seq > %s AND path >= %s AND path < %s",
                       (box_id, cursor, lo, hi))
        return int(row[0]) if row else 0

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[CommitInfo]:
        lo, hi = range_under(prefix)
        return [commit_info(r) for r in self.rows(
            f"{COMMIT} WHERE c.box_id = %s AND c.seq < %s AND c.seq IN (SELECT seq FROM journal "
            "WHERE box_id = %s AND path >= %s AND path < %s) ORDER BY c.seq DESC LIMIT %s",
            (box_id, before if before is not None else NO_SEQ, box_id, lo, hi, limit))]

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[Entry], int]:
        lo, hi = range_under(prefix)
        # A commit's entries never change once written: the two statements need no common snapshot.
        with self.read() as conn:
            found = entries(conn, f"SELECT {ENTRY} FROM journal WHERE box_id = %s AND seq = %s AND path >= %s "
                                  "AND path < %s ORDER BY path LIMIT %s", (box_id, seq, lo, hi, limit))
            row = conn.execute("SELECT COUNT(*) FROM journal WHERE box_id = %s AND seq = %s AND path >= %s "
                               "AND path < %s", (box_id, seq, lo, hi)).fetchone()
        return found, int(row[0]) if row else 0

    # --- links ------------------------------------------------------------------------------

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int:
        row = self.one(
            "INSERT INTO links (token_hash, box_id, path, user_id, created, expires) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING id", (token_hash, box_id, path, user_id, time.time(), expires))
        assert row is not None
        return int(row[0])

    def link(self, link_id: int) -> Link | None:
        return _link(self.one(f"{LINK} WHERE id = %s", (link_id,)))

    def link_by_hash(self, token_hash: str) -> Link | None:
        return _link(self.one(f"{LINK} WHERE token_hash = %s", (token_hash,)))

    def links_for(self, user_id: int, box_id: int | None) -> list[LinkListing]:
        rows = self.rows(
            "SELECT l.id, l.token_hash, l.box_id, l.path, l.user_id, l.created, l.expires, l.revoked, b.name, o.name, "
            "u.name FROM links l JOIN boxes b ON b.id = l.box_id JOIN users o ON o.id = b.owner_id "
            "JOIN users u ON u.id = l.user_id WHERE (l.user_id = %s OR b.owner_id = %s) "
            "AND (%s::bigint IS NULL OR l.box_id = %s) ORDER BY l.id", (user_id, user_id, box_id, box_id))
        return [LinkListing(Link(*r[:8]), r[8], r[9], r[10]) for r in rows]

    def revoke_link(self, link_id: int) -> None:
        self.execute("UPDATE links SET revoked = %s WHERE id = %s AND revoked IS NULL", (time.time(), link_id))


__all__ = ["FoldersPg"]
