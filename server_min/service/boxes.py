"""Boxes: creating one, finding one by name (the caller's own, or one shared with it), listing them."""

from __future__ import annotations

from typing import Any

from box_common.frames import MAX_BLOCK
from server_min.errors import BadRequest, NotFound, Unprocessable
from server_min.meta.base import AlreadyExists, MetaStore
from server_min.service.access import Access, Caller, Rights
from server_min.service.accounts import NAME_RE
from server_min.service.sharing import folder_of

DEFAULT_SIZES = (256 << 10, 1 << 20, 4 << 20)


class Boxes:
    """Create, find and list boxes."""

    def __init__(self, meta: MetaStore, rights: Rights) -> None:
        self.meta = meta
        self.rights = rights

    def create(self, caller: Caller, name: str, sizes: tuple[int, int, int] | None) -> dict[str, Any]:
        """Create a box owned by the caller, or return it if it exists already."""
        if not NAME_RE.match(name):
            raise BadRequest(f"box name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        existing = self.meta.box_by_name(caller.user_id, name)
        if existing is not None:
            return self.json(self.rights.access(caller, existing.id))
        sizes = sizes or DEFAULT_SIZES
        lo, avg, hi = sizes
        if not (64 <= lo <= avg <= hi <= MAX_BLOCK) or not (256 <= avg <= 4 << 20) or hi < 1024:
            raise BadRequest("chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB")
        try:
            box_id = self.meta.create_box(caller.user_id, name, sizes)
        except AlreadyExists:  # made by a request of the same caller a moment ago
            made = self.meta.box_by_name(caller.user_id, name)
            assert made is not None
            box_id = made.id
        return self.json(self.rights.access(caller, box_id))

    def find(self, caller: Caller, ref: str) -> dict[str, Any]:
        """Resolve 'BOX' (the caller's own), 'OWNER/BOX', or 'OWNER/BOX/FOLDER' (a folder shared with
        the caller) to a box the caller may read."""
        parts = ref.split("/", 2)
        owner_name, box_name = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        folder = folder_of(parts[2]) if len(parts) > 2 else None
        owner = self.meta.user_by_name(owner_name) if owner_name else None
        owner_id = caller.user_id if not owner_name else (owner.id if owner else -1)
        box = self.meta.box_by_name(owner_id, box_name)
        try:
            if box is None:
                raise NotFound("no such box")
            access = self.rights.access(caller, box.id)
        except NotFound:  # the same answer whether the box exists or not, and never its id
            raise NotFound(f"no box named {ref!r} that you can access") from None
        if folder and access.prefix != folder:
            if not access.prefix:
                raise Unprocessable(f"you have the whole box {owner_name}/{box_name}: clone it without a folder")
            raise NotFound(f"no box named {ref!r} that you can access")
        return self.json(access)

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        """Every box the caller holds a share of, with its head as the caller sees it."""
        return [{"id": m.box.id, "name": m.box.name, "owner": m.box.owner, "role": m.role, "prefix": m.prefix,
                 "head": self.rights.head(Access(m.box, m.role, m.prefix))}
                for m in self.meta.boxes_of(caller.user_id)]

    def info(self, caller: Caller, box_id: int) -> dict[str, Any]:
        return self.json(self.rights.access(caller, box_id))

    def json(self, access: Access) -> dict[str, Any]:
        """A box as the answers show it to a member."""
        box = access.box
        return {
            "id": box.id, "name": box.name, "owner": box.owner, "role": access.role, "prefix": access.prefix,
            "head": self.rights.head(access),
            "chunking": {"min": box.min_size, "avg": box.avg_size, "max": box.max_size},
        }


__all__ = ["DEFAULT_SIZES", "Boxes"]
