"""The in-memory store's users, tokens and devices; boxes and members."""

from __future__ import annotations

import dataclasses
import time

from server_min.meta.base import AlreadyExists
from server_min.meta.memory.tables import Tables
from server_min.meta.records import Box, Device, DeviceCursor, Member, MemberBox, TokenOwner, User


class AccountsMem(Tables):
    """Users, tokens and devices; boxes and members."""

    def add_user(self, name: str, token_hash: str) -> int:
        with self._mutex:
            if self.user_by_name(name) is not None:
                raise AlreadyExists(f"user {name!r} already exists")
            user = User(self._id(), name, None, time.time())
            self.users[user.id] = user
            self.tokens[token_hash] = TokenOwner(user.id, name, None, False)
            return user.id

    def user(self, user_id: int) -> User | None:
        return self.users.get(user_id)

    def user_by_name(self, name: str) -> User | None:
        with self._mutex:
            return next((u for u in self.users.values() if u.name == name), None)

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self._mutex:
            self.users[user_id] = dataclasses.replace(self.users[user_id], password_hash=password_hash)

    def token(self, token_hash: str) -> TokenOwner | None:
        return self.tokens.get(token_hash)

    def add_token(self, user_id: int, token_hash: str) -> None:
        with self._mutex:
            self.tokens[token_hash] = TokenOwner(user_id, self.users[user_id].name, None, False)

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        with self._mutex:
            now = time.time()
            device = Device(self._id(), user_id, name, kind, now, now, False)
            self.device_rows[device.id] = device
            self.tokens[token_hash] = TokenOwner(user_id, self.users[user_id].name, device.id, False)
            return device.id

    def device(self, device_id: int) -> Device | None:
        return self.device_rows.get(device_id)

    def devices(self, user_id: int) -> list[Device]:
        with self._mutex:
            return sorted((d for d in self.device_rows.values() if d.user_id == user_id), key=lambda d: d.id)

    def revoke_device(self, user_id: int, device_id: int) -> None:
        with self._mutex:
            device = self.device_rows.get(device_id)
            if device is None or device.user_id != user_id:
                return
            self.device_rows[device_id] = dataclasses.replace(device, revoked=True)
            for key, owner in self.tokens.items():
                if owner.device_id == device_id:
                    self.tokens[key] = dataclasses.replace(owner, revoked=True)

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None,
                     folder: str = "") -> None:
        with self._mutex:
            now = time.time()
            if device_id in self.device_rows:
                self.device_rows[device_id] = dataclasses.replace(self.device_rows[device_id], last_seen=now)
            if box_id is not None and cursor is not None:
                old = self.cursors.get((device_id, box_id, folder), (cursor, now))[0]
                self.cursors[(device_id, box_id, folder)] = (max(old, cursor), now)
                if folder:
                    self.cursors.pop((device_id, box_id, ""), None)

    def device_cursors(self, device_id: int) -> list[DeviceCursor]:
        with self._mutex:
            return [DeviceCursor(box, self.boxes[box].name, cursor, updated, folder)
                    for (dev, box, folder), (cursor, updated) in sorted(self.cursors.items()) if dev == device_id]

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        with self._mutex:
            if self.box_by_name(owner_id, name) is not None:
                raise AlreadyExists(f"box {name!r} already exists")
            box = Box(self._id(), owner_id, self.users[owner_id].name, name, *sizes, time.time(), 0)
            self.boxes[box.id] = box
            self.shares[(box.id, owner_id, "")] = "owner"
            return box.id

    def box(self, box_id: int) -> Box | None:
        return self.boxes.get(box_id)

    def box_by_name(self, owner_id: int, name: str) -> Box | None:
        with self._mutex:
            return next((b for b in self.boxes.values() if b.owner_id == owner_id and b.name == name), None)

    def boxes_of(self, user_id: int) -> list[MemberBox]:
        with self._mutex:
            return [MemberBox(self.boxes[b], role, prefix)
                    for (b, u, prefix), role in sorted(self.shares.items()) if u == user_id]

    def memberships(self, box_id: int, user_id: int) -> list[Member]:
        with self._mutex:
            return [m for m in self._members(box_id) if m.user_id == user_id]

    def members(self, box_id: int) -> list[Member]:
        with self._mutex:
            return sorted(self._members(box_id), key=lambda m: (m.role != "owner", m.name, m.prefix))

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        with self._mutex:
            new = (box_id, user_id, prefix) not in self.shares
            self.shares[(box_id, user_id, prefix)] = role
            return new

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        with self._mutex:
            gone = [k for k, role in self.shares.items() if k[0] == box_id and k[1] == user_id and role != "owner"
                    and (prefix is None or k[2] == prefix)]
            for key in gone:
                del self.shares[key]
            return len(gone)

    def _members(self, box_id: int) -> list[Member]:
        return [Member(u, self.users[u].name, prefix, role)
                for (b, u, prefix), role in self.shares.items() if b == box_id]
