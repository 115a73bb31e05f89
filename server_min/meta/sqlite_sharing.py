"""SQL for sharing, links and passwords, on the same SQLite database as SqliteMeta (its connections and
transactions). Kept apart from sqlite.py so the sync core and the sharing layer can change independently."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from server_min.meta.sqlite import SqliteMeta

SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, box_id INTEGER NOT NULL REFERENCES boxes(id),
    path TEXT NOT NULL, user_id INTEGER NOT NULL REFERENCES users(id), created REAL NOT NULL,
    expires REAL, revoked REAL);
CREATE INDEX IF NOT EXISTS links_box ON links (box_id);
CREATE INDEX IF NOT EXISTS links_user ON links (user_id);
"""


def _range(prefix: str) -> tuple[str, str]:
    """The half-open string range holding every path strictly under folder `prefix`."""
    return prefix + "/", prefix + "0"


class SqliteSharing:
    """Members, links, passwords and folder-scoped journal queries."""

    def __init__(self, meta: SqliteMeta) -> None:
        self.meta = meta
        meta.conn.executescript(SCHEMA)

    # --- users and passwords ----------------------------------------------------------------

    def user(self, name: str) -> sqlite3.Row | None:
        return self.meta.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()

    def user_by_id(self, user_id: int) -> sqlite3.Row | None:
        return self.meta.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.meta.write() as conn:
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    def add_token(self, user_id: int, token_hash: str) -> None:
        """A new account token (not bound to a device), as a password login hands out."""
        with self.meta.write() as conn:
            conn.execute(
                "INSERT INTO tokens (hash, user_id, created) VALUES (?, ?, ?)", (token_hash, user_id, time.time())
            )

    # --- members ----------------------------------------------------------------------------

    def members(self, box_id: int) -> list[sqlite3.Row]:
        return self.meta.conn.execute(
            "SELECT m.user_id, m.prefix, m.role, u.name FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.box_id = ? ORDER BY m.role = 'owner' DESC, u.name, m.prefix",
            (box_id,),
        ).fetchall()

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        """Add a share, or change its role; True if it is new."""
        with self.meta.write() as conn:
            old = conn.execute(
                "SELECT role FROM members WHERE box_id = ? AND user_id = ? AND prefix = ?", (box_id, user_id, prefix)
            ).fetchone()
            conn.execute(
                "INSERT INTO members (box_id, user_id, prefix, role) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (box_id, user_id, prefix) DO UPDATE SET role = excluded.role",
                (box_id, user_id, prefix, role),
            )
            return old is None

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        """Remove one share of a user (or all of them when `prefix` is None); never the owner's row."""
        with self.meta.write() as conn:
            if prefix is None:
                cur = conn.execute(
                    "DELETE FROM members WHERE box_id = ? AND user_id = ? AND role != 'owner'", (box_id, user_id)
                )
            else:
                cur = conn.execute(
                    "DELETE FROM members WHERE box_id = ? AND user_id = ? AND prefix = ? AND role != 'owner'",
                    (box_id, user_id, prefix),
                )
            return cur.rowcount

    # --- the journal as a folder member sees it ---------------------------------------------

    def path_state(self, box_id: int, path: str) -> str | None:
        """'file', 'dir' or 'link' if `path` is present now; 'dir' also when only paths under it are."""
        conn = self.meta.conn
        row = conn.execute(
            "SELECT j.kind FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path AND j.seq = f.rev "
            "WHERE f.box_id = ? AND f.path = ? AND f.present = 1",
            (box_id, path),
        ).fetchone()
        if row is not None:
            return str(row["kind"])
        lo, hi = _range(path) if path else ("", "\U0010ffff")
        under = conn.execute(
            "SELECT 1 FROM files WHERE box_id = ? AND path >= ? AND path < ? AND present = 1 LIMIT 1", (box_id, lo, hi)
        ).fetchone()
        return "dir" if under is not None or path == "" else None

    def current(self, box_id: int, path: str) -> sqlite3.Row | None:
        """The journal entry of `path` as it is now, if present."""
        return self.meta.conn.execute(
            "SELECT j.* FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path AND j.seq = f.rev "
            "WHERE f.box_id = ? AND f.path = ? AND f.present = 1",
            (box_id, path),
        ).fetchone()

    def current_under(self, box_id: int, prefix: str) -> list[sqlite3.Row]:
        """Every present entry strictly under folder `prefix` ('' for the whole box), in path order."""
        lo, hi = _range(prefix) if prefix else ("", "\U0010ffff")
        return self.meta.conn.execute(
            "SELECT j.* FROM files f JOIN journal j ON j.box_id = f.box_id AND j.path = f.path AND j.seq = f.rev "
            "WHERE f.box_id = ? AND f.path >= ? AND f.path < ? AND f.present = 1 ORDER BY f.path",
            (box_id, lo, hi),
        ).fetchall()

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        """The last commit after `after` that touched a path under `prefix`, or None."""
        lo, hi = _range(prefix)
        row = self.meta.conn.execute(
            "SELECT MAX(seq) FROM journal WHERE box_id = ? AND seq > ? AND path >= ? AND path < ?",
            (box_id, after, lo, hi),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def head_under(self, box_id: int, prefix: str) -> int:
        """The last commit that touched a path under `prefix` (0 if none): a folder member's head."""
        lo, hi = _range(prefix)
        row = self.meta.conn.execute(
            "SELECT MAX(rev) FROM files WHERE box_id = ? AND path >= ? AND path < ?", (box_id, lo, hi)
        ).fetchone()
        return int(row[0] or 0)

    def count_under(self, box_id: int, prefix: str, cursor: int, exclude_device: int | None) -> int:
        """Journal entries under `prefix` after `cursor`, not counting those of `exclude_device`."""
        lo, hi = _range(prefix)
        row = self.meta.conn.execute(
            "SELECT COUNT(*) FROM journal j JOIN commits c ON c.box_id = j.box_id AND c.seq = j.seq "
            "WHERE j.box_id = ? AND j.seq > ? AND j.path >= ? AND j.path < ? "
            "AND (c.device_id IS NOT ? OR c.device_id IS NULL)",
            (box_id, cursor, lo, hi, exclude_device),
        ).fetchone()
        return int(row[0])

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[sqlite3.Row]:
        """Commits that touched `prefix`, newest first, with who and which device."""
        lo, hi = _range(prefix)
        return self.meta.conn.execute(
            "SELECT c.*, u.name AS user, d.name AS device FROM commits c JOIN users u ON u.id = c.user_id "
            "LEFT JOIN devices d ON d.id = c.device_id WHERE c.box_id = ? AND c.seq < ? AND c.seq IN "
            "(SELECT DISTINCT seq FROM journal WHERE box_id = ? AND path >= ? AND path < ?) "
            "ORDER BY c.seq DESC LIMIT ?",
            (box_id, before if before is not None else 1 << 62, box_id, lo, hi, limit),
        ).fetchall()

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[sqlite3.Row], int]:
        """The paths one commit changed under `prefix` (at most `limit`), and how many there are."""
        lo, hi = _range(prefix)
        conn = self.meta.conn
        rows = conn.execute(
            "SELECT * FROM journal WHERE box_id = ? AND seq = ? AND path >= ? AND path < ? "
            "ORDER BY path LIMIT ?",
            (box_id, seq, lo, hi, limit),
        ).fetchall()
        total = conn.execute(
            "SELECT COUNT(*) FROM journal WHERE box_id = ? AND seq = ? AND path >= ? AND path < ?",
            (box_id, seq, lo, hi),
        ).fetchone()[0]
        return rows, int(total)

    # --- links ------------------------------------------------------------------------------

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int:
        with self.meta.write() as conn:
            cur = conn.execute(
                "INSERT INTO links (token_hash, box_id, path, user_id, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, box_id, path, user_id, time.time(), expires),
            )
            return int(cur.lastrowid or 0)

    def link_by_hash(self, token_hash: str) -> sqlite3.Row | None:
        return self.meta.conn.execute("SELECT * FROM links WHERE token_hash = ?", (token_hash,)).fetchone()

    def link(self, link_id: int) -> sqlite3.Row | None:
        return self.meta.conn.execute("SELECT * FROM links WHERE id = ?", (link_id,)).fetchone()

    def links_for(self, user_id: int, box_id: int | None) -> list[sqlite3.Row]:
        """Links the user made, and every link of the boxes the user owns."""
        return self.meta.conn.execute(
            "SELECT l.*, b.name AS box, o.name AS owner, u.name AS creator FROM links l "
            "JOIN boxes b ON b.id = l.box_id JOIN users o ON o.id = b.owner_id JOIN users u ON u.id = l.user_id "
            "WHERE (l.user_id = ? OR b.owner_id = ?) AND (? IS NULL OR l.box_id = ?) ORDER BY l.id",
            (user_id, user_id, box_id, box_id),
        ).fetchall()

    def revoke_link(self, link_id: int) -> None:
        with self.meta.write() as conn:
            conn.execute("UPDATE links SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), link_id))

    def block_rows(self, digests: list[bytes]) -> dict[bytes, Any]:
        """Where each of `digests` is stored (a link reads blocks through a file, never by hash alone)."""
        with self.meta.read() as conn:
            return self.meta.existing_blocks(conn, digests)
