"""SQL for users, tokens, devices, boxes and shares."""

from __future__ import annotations

import time
from typing import Any

from psycopg import errors

from server_min.meta.base import AlreadyExists
from server_min.meta.postgres.conn import Connections
from server_min.meta.records import Box, Device, DeviceCursor, Member, MemberBox, TokenOwner, User

BOX = "SELECT b.id, b.owner_id, u.name, b.name, b.min_size, b.avg_size, b.max_size, b.created, b.head"
BOX_FROM = " FROM boxes b JOIN users u ON u.id = b.owner_id"
USER = "SELECT id, name, password_hash, created FROM users"
DEVICE = "SELECT id, user_id, name, kind, created, last_seen, revoked FROM devices"
MEMBER = "SELECT m.user_id, u.name, m.prefix, m.role FROM members m JOIN users u ON u.id = m.user_id"


def _user(row: tuple[Any, ...] | None) -> User | None:
    return None if row is None else User(*row)


def box_of(row: tuple[Any, ...] | None) -> Box | None:
    return None if row is None else Box(*row[:9])


class AccountsPg(Connections):
    """Users, tokens and devices; boxes and members."""

    def add_user(self, name: str, token_hash: str) -> int:
        try:
            with self.write() as conn:
                now = time.time()
                row = conn.execute("INSERT INTO users (name, created) VALUES (%s, %s) RETURNING id",
                                   (name, now)).fetchone()
                assert row is not None
                conn.execute("INSERT INTO tokens (hash, user_id, created) VALUES (%s, %s, %s)",
                             (token_hash, row[0], now))
                return int(row[0])
        except errors.UniqueViolation:
            raise AlreadyExists(f"user {name!r} already exists") from None

    def user(self, user_id: int) -> User | None:
        return _user(self.one(f"{USER} WHERE id = %s", (user_id,)))

    def user_by_name(self, name: str) -> User | None:
        return _user(self.one(f"{USER} WHERE name = %s", (name,)))

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))

    def token(self, token_hash: str) -> TokenOwner | None:
        row = self.one("SELECT t.user_id, u.name, t.device_id, t.revoked FROM tokens t "
                       "JOIN users u ON u.id = t.user_id WHERE t.hash = %s", (token_hash,))
        return None if row is None else TokenOwner(*row)

    def add_token(self, user_id: int, token_hash: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO tokens (hash, user_id, created) VALUES (%s, %s, %s)",
                         (token_hash, user_id, time.time()))

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        with self.write() as conn:
            now = time.time()
            row = conn.execute("INSERT INTO devices (user_id, name, kind, created, last_seen) "
                               "VALUES (%s, %s, %s, %s, %s) RETURNING id", (user_id, name, kind, now, now)).fetchone()
            assert row is not None
            conn.execute("INSERT INTO tokens (hash, user_id, device_id, created) VALUES (%s, %s, %s, %s)",
                         (token_hash, user_id, row[0], now))
            return int(row[0])

    def device(self, device_id: int) -> Device | None:
        row = self.one(f"{DEVICE} WHERE id = %s", (device_id,))
        return None if row is None else Device(*row)

    def devices(self, user_id: int) -> list[Device]:
        return [Device(*r) for r in self.rows(f"{DEVICE} WHERE user_id = %s ORDER BY id", (user_id,))]

    def revoke_device(self, user_id: int, device_id: int) -> None:
        with self.write() as conn:
            conn.execute("UPDATE devices SET revoked = true WHERE id = %s AND user_id = %s", (device_id, user_id))
            conn.execute("UPDATE tokens SET revoked = true WHERE device_id = %s AND user_id = %s",
                         (device_id, user_id))

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None,
                     folder: str = "") -> None:
        now = time.time()
        if box_id is None or cursor is None:
            self.execute("UPDATE devices SET last_seen = %s WHERE id = %s", (now, device_id))
            return
        with self.write() as conn:
            conn.execute("UPDATE devices SET last_seen = %s WHERE id = %s", (now, device_id))
            conn.execute(
                "INSERT INTO device_cursors (device_id, box_id, folder, cursor, updated) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (device_id, box_id, folder) DO UPDATE SET "
                "cursor = GREATEST(device_cursors.cursor, excluded.cursor), updated = excluded.updated",
                (device_id, box_id, folder, cursor, now))
            if folder:
                conn.execute("DELETE FROM device_cursors WHERE device_id = %s AND box_id = %s AND folder = ''",
                             (device_id, box_id))

    def device_cursors(self, device_id: int) -> list[DeviceCursor]:
        return [DeviceCursor(*r) for r in self.rows(
            "SELECT dc.box_id, b.name, dc.cursor, dc.updated, dc.folder FROM device_cursors dc "
            "JOIN boxes b ON b.id = dc.box_id WHERE dc.device_id = %s ORDER BY dc.box_id, dc.folder", (device_id,))]

    # --- boxes and members ------------------------------------------------------------------

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        try:
            with self.write() as conn:
                row = conn.execute(
                    "INSERT INTO boxes (owner_id, name, min_size, avg_size, max_size, created) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id", (owner_id, name, *sizes, time.time())).fetchone()
                assert row is not None
                conn.execute("INSERT INTO members (box_id, user_id, prefix, role) VALUES (%s, %s, '', 'owner')",
                             (row[0], owner_id))
                return int(row[0])
        except errors.UniqueViolation:
            raise AlreadyExists(f"box {name!r} already exists") from None

    def box(self, box_id: int) -> Box | None:
        return box_of(self.one(f"{BOX}{BOX_FROM} WHERE b.id = %s", (box_id,)))

    def box_by_name(self, owner_id: int, name: str) -> Box | None:
        return box_of(self.one(f"{BOX}{BOX_FROM} WHERE b.owner_id = %s AND b.name = %s", (owner_id, name)))

    def boxes_of(self, user_id: int) -> list[MemberBox]:
        rows = self.rows(f"{BOX}, m.role, m.prefix{BOX_FROM} JOIN members m ON m.box_id = b.id "
                         "WHERE m.user_id = %s ORDER BY b.id, m.prefix", (user_id,))
        return [MemberBox(Box(*r[:9]), r[9], r[10]) for r in rows]

    def head(self, box_id: int) -> int:
        row = self.one("SELECT head FROM boxes WHERE id = %s", (box_id,))
        return int(row[0]) if row else 0

    def memberships(self, box_id: int, user_id: int) -> list[Member]:
        return [Member(*r) for r in self.rows(f"{MEMBER} WHERE m.box_id = %s AND m.user_id = %s ORDER BY m.prefix",
                                              (box_id, user_id))]

    def members(self, box_id: int) -> list[Member]:
        return [Member(*r) for r in self.rows(
            f"{MEMBER} WHERE m.box_id = %s ORDER BY m.role = 'owner' DESC, u.name, m.prefix", (box_id,))]

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        # One statement. xmax is 0 on a row the statement inserted, the updating transaction's id on one it
        # updated: whether the share is new, without a second statement that another writer could race.
        row = self.one(
            "INSERT INTO members (box_id, user_id, prefix, role) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (box_id, user_id, prefix) DO UPDATE SET role = excluded.role RETURNING xmax = 0",
            (box_id, user_id, prefix, role))
        return bool(row and row[0])

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        if prefix is None:
            return self.execute("DELETE FROM members WHERE box_id = %s AND user_id = %s AND role != 'owner'",
                                (box_id, user_id))
        return self.execute("DELETE FROM members WHERE box_id = %s AND user_id = %s AND prefix = %s "
                            "AND role != 'owner'", (box_id, user_id, prefix))


__all__ = ["AccountsPg", "box_of"]
