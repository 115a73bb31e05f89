"""Who the caller is, and what it may do with a box: its role and the folder it is confined to; and the
box as such a member sees it (its head, times and pending counts stay inside the folder)."""

from __future__ import annotations

from dataclasses import dataclass

from server_min.errors import Forbidden, NotFound
from server_min.meta.base import MetaStore
from server_min.meta.records import Box

ROLES_WRITE = ("owner", "editor")


@dataclass(frozen=True)
class Caller:
    """The authenticated user (and device) behind a request."""

    user_id: int
    name: str
    device_id: int | None


@dataclass(frozen=True)
class Access:
    """A caller's rights on one box: its role and the folder it is confined to ('' for all)."""

    box: Box
    role: str
    prefix: str

    @property
    def can_write(self) -> bool:
        return self.role in ROLES_WRITE


class Rights:
    """The access rules, and a folder member's view of the head."""

    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta

    def access(self, caller: Caller, box_id: int, write: bool = False) -> Access:
        """The caller's rights on a box: NotFound when it has none (no one learns what exists)."""
        box = self.meta.box(box_id)
        shares = self.meta.memberships(box_id, caller.user_id) if box is not None else []
        if box is None or not shares:
            # `missing` tells a client that the box itself is gone for it (it then names the box it knows by name).
            raise NotFound(f"no box {box_id} that you can access", missing="box")
        best = min(shares, key=lambda m: (len(m.prefix), m.role not in ROLES_WRITE))
        access = Access(box, best.role, best.prefix)
        if write and not access.can_write:
            raise Forbidden(f"you have {access.role} access to box {box.name!r}; pushing needs editor access")
        return access

    # --- a folder member's view of the head ------------------------------------------------

    def head(self, access: Access) -> int:
        """The box head as this member may see it: the last commit that touched its folder."""
        if not access.prefix:
            return access.box.head
        return self.meta.head_under(access.box.id, access.prefix)

    def head_after(self, access: Access, cursor: int) -> int:
        """A head for answers about `cursor`: the last visible commit after it, else `cursor` itself, so a
        member of one folder learns nothing of commits outside it."""
        if not access.prefix:
            return self.meta.head(access.box.id)
        found = self.meta.last_seq_under(access.box.id, access.prefix, cursor)
        return found if found is not None else cursor

    def seq_at(self, access: Access, when: float) -> int:
        """The last commit at or before time `when` that this member may see (0 if none): a member of one
        folder resolves times against the commits that touched it only, so it learns no other's time."""
        seq = self.meta.seq_at(access.box.id, when)
        if not access.prefix or seq == 0:
            return seq
        found = self.meta.commits_under(access.box.id, access.prefix, 1, seq + 1)
        return found[0].seq if found else 0

    def waiting(self, access: Access, cursor: int) -> int:
        """How many changes after `cursor` this member may see."""
        if not access.prefix:
            return self.meta.count_after(access.box.id, cursor)
        return self.meta.count_under(access.box.id, access.prefix, cursor)


__all__ = ["ROLES_WRITE", "Access", "Caller", "Rights"]
