"""Users, tokens and devices: who a token belongs to, a user's devices, and passwords."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from server_min.errors import BadRequest, Conflict, NotFound, Unauthorized
from server_min.limits.base import AttemptLog
from server_min.meta.base import AlreadyExists, MetaStore
from server_min.notify.base import Notifier
from server_min.service.access import Caller, Rights
from server_min.service.passwords import Passwords

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEVICE_KINDS = ("desktop", "laptop", "server", "phone", "ci", "other")


def hash_token(token: str) -> str:
    """Tokens are 32 random bytes, so one SHA-256 is enough: only this hash is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh device token."""
    return "box_" + secrets.token_urlsafe(32)


class Accounts:
    """Users, their tokens and devices."""

    def __init__(self, meta: MetaStore, rights: Rights, notifier: Notifier, attempts: AttemptLog | None = None) -> None:
        """`attempts` counts wrong passwords (see passwords.py); without it, logins with a password are refused."""
        self.meta = meta
        self.rights = rights
        self.notifier = notifier
        self.passwords = Passwords(meta, attempts)

    def add_user(self, name: str) -> str:
        """Create a user and return its first token (shown once; only the hash is kept)."""
        if not NAME_RE.match(name):
            raise BadRequest(f"user name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        token = new_token()
        try:
            self.meta.add_user(name, hash_token(token))
        except AlreadyExists:
            raise Conflict(f"user {name!r} already exists") from None
        return token

    def set_password(self, name: str, password: str) -> None:
        """Set a user's password (stored as an argon2 hash)."""
        self.passwords.set_password(name, password)

    def login(self, name: str, password: str, addr: str) -> dict[str, str]:
        """A new account token for a user name and password (rate-limited; see passwords.py)."""

        def make() -> tuple[str, str]:
            token = new_token()
            return token, hash_token(token)

        return self.passwords.login(name, password, addr, make)

    def authenticate(self, token: str | None) -> Caller:
        """The caller a bearer token belongs to, or Unauthorized."""
        if not token:
            raise Unauthorized("missing token: run 'boxctl login URL --user NAME --token TOKEN'")
        owner = self.meta.token(hash_token(token))
        if owner is None or owner.revoked:
            raise Unauthorized("invalid or revoked token")
        return Caller(owner.user_id, owner.name, owner.device_id)

    def register_device(self, caller: Caller, name: str, kind: str) -> dict[str, Any]:
        """Record a new device of the caller."""
        name = name.strip()
        if not name or len(name) > 64 or any(ord(ch) < 32 or ch in "/\\" for ch in name):
            raise BadRequest("device name must be 1-64 printable characters without slashes")
        if kind not in DEVICE_KINDS:
            raise BadRequest(f"unknown device kind {kind!r}")
        token = new_token()
        device_id = self.meta.add_device(caller.user_id, name, kind, hash_token(token))
        return {"id": device_id, "name": name, "kind": kind, "token": token}

    def list_devices(self, caller: Caller) -> list[dict[str, Any]]:
        """The caller's devices, with how far each synced folder of each has acknowledged its box and how much it
        is behind (a device's `behind` adds up its folders')."""
        devices = []
        for d in self.meta.devices(caller.user_id):
            boxes = []
            for c in self.meta.device_cursors(d.id):
                try:  # a folder member counts only its folder; a box no longer shared is left out
                    access = self.rights.access(caller, c.box_id)
                except NotFound:
                    continue
                boxes.append({"box_id": c.box_id, "box": c.box, "folder": c.folder, "cursor": c.cursor,
                              "head": self.rights.head(access),
                              "behind": self.rights.waiting(access, c.cursor), "acked": c.updated})
            devices.append({
                "id": d.id, "name": d.name, "kind": d.kind, "created": d.created, "last_seen": d.last_seen,
                "revoked": d.revoked, "current": d.id == caller.device_id,
                "behind": sum(b["behind"] for b in boxes), "boxes": boxes,
            })
        return devices

    def revoke_device(self, caller: Caller, ref: str) -> dict[str, Any]:
        """Revoke one of the caller's devices, by id or name; its next request gets 401, and its long polls
        re-check their tokens now, not at their timeout."""
        matches = [d for d in self.meta.devices(caller.user_id)
                   if (str(d.id) == ref or d.name == ref) and not d.revoked]
        if not matches:
            raise NotFound(f"no active device {ref!r}; see 'boxctl devices'")
        if len(matches) > 1:
            ids = ", ".join(str(d.id) for d in matches)
            raise Conflict(f"{len(matches)} devices are named {ref!r} (ids {ids}); revoke one by id")
        self.meta.revoke_device(caller.user_id, matches[0].id)
        self.notifier.kick_user(caller.user_id)
        return {"id": matches[0].id, "name": matches[0].name, "revoked": True}

    def check_device(self, caller: Caller, device_id: int | None) -> int | None:
        """A device id the caller may speak for, or None."""
        if device_id is None:
            return caller.device_id
        device = self.meta.device(device_id)
        if device is None or device.user_id != caller.user_id:
            raise BadRequest(f"device {device_id} is not one of yours")
        return device_id


__all__ = ["Accounts", "hash_token", "new_token"]
