"""SQL for users, tokens, devices, boxes and shares."""

from __future__ import annotations

import sqlite3
import time

from server_min.meta.base import AlreadyExists
from server_min.meta.records import Box, Device, DeviceCursor, Member, MemberBox, TokenOwner, User
from server_min.meta.sqlite.conn import Connections

BOX = "SELECT b.id, b.owner_id, u.name, b.name, b.min_size, b.avg_size, b.max_size, b.created, b.head"
BOX_FROM = " FROM boxes b JOIN users u ON u.id = b.owner_id"


def _user(row: sqlite3.Row | None) -> User | None:
    return None if row is None else User(row["id"], row["name"], row["password_hash"], row["created"])


def _device(row: sqlite3.Row) -> Device:
    return Device(row["id"], row["user_id"], row["name"], row["kind"], row["created"], row["last_seen"],
                  bool(row["revoked"]))


def box_of(row: sqlite3.Row | tuple | None) -> Box | None:
    return None if row is None else Box(*row[:9])


class AccountsSql(Connections):
    """Users, tokens and devices; boxes and members."""

    def add_user(self, name: str, token_hash: str) -> int:
        try:
            with self.write() as conn:
                cur = conn.execute("INSERT INTO users (name, created) VALUES (?, ?)", (name, time.time()))
                user_id = int(cur.lastrowid or 0)
                conn.execute("INSERT INTO tokens (hash, user_id, created) VALUES (?, ?, ?)",
                             (token_hash, user_id, time.time()))
                return user_id
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {name!r} already exists") from None

    def user(self, user_id: int) -> User | None:
        return _user(self.conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())

    def user_by_name(self, name: str) -> User | None:
        return _user(self.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone())

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    def token(self, token_hash: str) -> TokenOwner | None:
        row = self.conn.execute(
            "SELECT t.user_id, u.name, t.device_id, t.revoked FROM tokens t JOIN users u ON u.id = t.user_id "
            "WHERE t.hash = ?", (token_hash,)).fetchone()
        return None if row is None else TokenOwner(row[0], row[1], row[2], bool(row[3]))

    def add_token(self, user_id: int, token_hash: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO tokens (hash, user_id, created) VALUES (?, ?, ?)",
                         (token_hash, user_id, time.time()))

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        with self.write() as conn:
            now = time.time()
            cur = conn.execute("INSERT INTO devices (user_id, name, kind, created, last_seen) VALUES (?, ?, ?, ?, ?)",
                               (user_id, name, kind, now, now))
            device_id = int(cur.lastrowid or 0)
            conn.execute("INSERT INTO tokens (hash, user_id, device_id, created) VALUES (?, ?, ?, ?)",
                         (token_hash, user_id, device_id, now))
            return device_id

    def device(self, device_id: int) -> Device | None:
        row = self.conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else _device(row)

    def devices(self, user_id: int) -> list[Device]:
        return [_device(r) for r in self.conn.execute("SELECT * FROM devices WHERE user_id = ? ORDER BY id",
                                                      (user_id,))]

    def revoke_device(self, user_id: int, device_id: int) -> None:
        with self.write() as conn:
            conn.execute("UPDATE devices SET revoked = 1 WHERE id = ? AND user_id = ?", (device_id, user_id))
            conn.execute("UPDATE tokens SET revoked = 1 WHERE device_id = ? AND user_id = ?", (device_id, user_id))

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None,
                     folder: str = "") -> None:
        with self.write() as conn:
            now = time.time()
            conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (now, device_id))
            if box_id is not None and cursor is not None:
                conn.execute(
                    "INSERT INTO device_cursors (device_id, box_id, folder, cursor, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (device_id, box_id, folder) DO UPDATE SET cursor = MAX(cursor, excluded.cursor), "
                    "updated = excluded.updated", (device_id, box_id, folder, cursor, now))
                if folder:
                    conn.execute("DELETE FROM device_cursors WHERE device_id = ? AND box_id = ? AND folder = ''",
                                 (device_id, box_id))

    def device_cursors(self, device_id: int) -> list[DeviceCursor]:
        return [DeviceCursor(*r) for r in self.conn.execute(
            "SELECT dc.box_id, b.name, dc.cursor, dc.updated, dc.folder FROM device_cursors dc "
            "JOIN boxes b ON b.id = dc.box_id WHERE dc.device_id = ? ORDER BY dc.box_id, dc.folder", (device_id,))]

    # --- boxes and members ------------------------------------------------------------------

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        try:
            with self.write() as conn:
                cur = conn.execute(
                    "INSERT INTO boxes (owner_id, name, min_size, avg_size, max_size, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (owner_id, name, *sizes, time.time()))
                box_id = int(cur.lastrowid or 0)
                conn.execute("INSERT INTO members (box_id, user_id, prefix, role) VALUES (?, ?, '', 'owner')",
                             (box_id, owner_id))
                return box_id
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"box {name!r} already exists") from None

    def box(self, box_id: int) -> Box | None:
        return box_of(self.conn.execute(f"{BOX}{BOX_FROM} WHERE b.id = ?", (box_id,)).fetchone())

    def box_by_name(self, owner_id: int, name: str) -> Box | None:
        return box_of(self.conn.execute(f"{BOX}{BOX_FROM} WHERE b.owner_id = ? AND b.name = ?",
                                        (owner_id, name)).fetchone())

    def boxes_of(self, user_id: int) -> list[MemberBox]:
        rows = self.conn.execute(f"{BOX}, m.role, m.prefix{BOX_FROM} JOIN members m ON m.box_id = b.id "
                                 "WHERE m.user_id = ? ORDER BY b.id", (user_id,))
        return [MemberBox(Box(*r[:9]), r[9], r[10]) for r in rows]

    def head(self, box_id: int) -> int:
        row = self.conn.execute("SELECT head FROM boxes WHERE id = ?", (box_id,)).fetchone()
        return int(row[0]) if row else 0

    def memberships(self, box_id: int, user_id: int) -> list[Member]:
        return [Member(*r) for r in self.conn.execute(
            "SELECT m.user_id, u.name, m.prefix, m.role FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.box_id = ? AND m.user_id = ?", (box_id, user_id))]

    def members(self, box_id: int) -> list[Member]:
        return [Member(*r) for r in self.conn.execute(
            "SELECT m.user_id, u.name, m.prefix, m.role FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.box_id = ? ORDER BY m.role = 'owner' DESC, u.name, m.prefix", (box_id,))]

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        with self.write() as conn:
            old = conn.execute("SELECT role FROM members WHERE box_id = ? AND user_id = ? AND prefix = ?",
                               (box_id, user_id, prefix)).fetchone()
            conn.execute("INSERT INTO members (box_id, user_id, prefix, role) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (box_id, user_id, prefix) DO UPDATE SET role = excluded.role",
                         (box_id, user_id, prefix, role))
            return old is None

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        with self.write() as conn:
            if prefix is None:
                cur = conn.execute("DELETE FROM members WHERE box_id = ? AND user_id = ? AND role != 'owner'",
                                   (box_id, user_id))
            else:
                cur = conn.execute("DELETE FROM members WHERE box_id = ? AND user_id = ? AND prefix = ? "
                                   "AND role != 'owner'", (box_id, user_id, prefix))
            return cur.rowcount


__all__ = ["AccountsSql", "box_of"]
