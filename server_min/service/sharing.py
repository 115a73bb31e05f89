"""Sharing rules: who may share a box or one folder of it, with whom, and in which role; and what a
member of one folder sees of the shares (see access.Rights for its view of the head).

Only the owner shares. A user holds at most one share per box (the whole box or one folder), so a
synced folder always knows which part of the box it mirrors; changing the role of that share is
`share add` again. Removing a share takes effect at the member's next request.
"""

from __future__ import annotations

from typing import Any

from box_common.paths import InvalidPath, is_under, normalize_prefix
from server_min.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from server_min.meta.base import MetaStore
from server_min.service.access import Access, Caller, Rights

SHARE_ROLES = ("viewer", "editor")


def folder_of(path: str) -> str:
    """A share or link path from the network in canonical form ('' is the whole box), or 400."""
    try:
        return normalize_prefix(path)
    except InvalidPath as exc:
        raise BadRequest(str(exc)) from None


class Sharing:
    """Share add / ls / rm."""

    def __init__(self, meta: MetaStore, rights: Rights) -> None:
        self.store = meta
        self.rights = rights

    def _owner_access(self, caller: Caller, box_id: int) -> Access:
        access = self.rights.access(caller, box_id)
        if access.role != "owner" or access.prefix:
            raise Forbidden(f"only the owner of box {access.box.name!r} can change who it is shared with")
        return access

    def add(self, caller: Caller, box_id: int, user: str, path: str, role: str) -> dict[str, Any]:
        """Share the box (path '') or one folder of it with `user` as viewer or editor."""
        if role not in SHARE_ROLES:
            raise BadRequest(f"role must be one of {', '.join(SHARE_ROLES)}")
        access = self._owner_access(caller, box_id)
        prefix = folder_of(path)
        target = self.store.user_by_name(user) if isinstance(user, str) and 0 < len(user) <= 64 else None
        if target is None:
            raise NotFound(f"no user named {user!r}")
        if target.id == caller.user_id:
            raise BadRequest("you own this box already")
        if prefix:
            kind = self.store.path_state(box_id, prefix)
            if kind is None:
                raise NotFound(f"box {access.box.name!r} has no folder {prefix!r}; push it first")
            if kind != "dir":
                raise Unprocessable(f"{prefix!r} is a {kind}; only the whole box or a folder can be shared")
        shares = [m for m in self.store.members(box_id) if m.user_id == target.id]
        other = [m for m in shares if m.prefix != prefix]
        if other:
            where = other[0].prefix or "the whole box"
            raise Conflict(f"{user} already has {other[0].role} access to {where!r} of this box; "
                           f"remove it first with 'boxctl share rm {user} {other[0].prefix}'".rstrip())
        created = self.store.put_member(box_id, target.id, prefix, role)
        return {"user": target.name, "path": prefix, "role": role, "created": created}

    def list(self, caller: Caller, box_id: int) -> list[dict[str, Any]]:
        """Who has access. The owner sees every share; a member sees the shares that overlap its folder,
        with paths relative to it, and never the names of other folders."""
        access = self.rights.access(caller, box_id)
        rows = []
        for m in self.store.members(box_id):
            prefix = m.prefix
            if access.prefix:
                if is_under(prefix, access.prefix):
                    prefix = prefix[len(access.prefix) + 1 :] if prefix != access.prefix else ""
                elif is_under(access.prefix, prefix):
                    prefix = ""  # a share above this folder covers all of it
                else:
                    continue
            rows.append({"user": m.name, "path": prefix, "role": m.role, "you": m.user_id == caller.user_id})
        return rows

    def remove(self, caller: Caller, box_id: int, user: str, path: str | None) -> dict[str, Any]:
        """Remove `user`'s share (the one at `path`, or any); a member may also remove its own."""
        access = self.rights.access(caller, box_id)
        target = self.store.user_by_name(user) if isinstance(user, str) and 0 < len(user) <= 64 else None
        is_self = target is not None and target.id == caller.user_id
        if not is_self:
            self._owner_access(caller, box_id)
        elif access.role == "owner":
            raise BadRequest("the owner cannot leave their own box")
        if target is None:
            raise NotFound(f"no user named {user!r}")
        prefix = folder_of(path) if path is not None else None
        removed = self.store.remove_members(box_id, target.id, prefix)
        if not removed:
            where = f"folder {prefix!r}" if prefix else "this box"
            raise NotFound(f"{user} has no share of {where}")
        return {"user": target.name, "removed": removed}


__all__ = ["SHARE_ROLES", "Sharing", "folder_of"]
