"""The head of an in-memory box and its journal as a member of one folder sees them, and links."""

from __future__ import annotations

import dataclasses
import time

from server_min.meta.memory.tables import Tables, under
from server_min.meta.records import CommitInfo, Entry, Link, LinkListing


class FoldersMem(Tables):
    """Folder-scoped reads of meta.base.JournalStore, and meta.base.LinkStore."""

    def path_state(self, box_id: int, path: str) -> str | None:
        with self._mutex:
            present = self._present(box_id)
            if path in present:
                return present[path].kind
            return "dir" if path == "" or any(under(p, path) for p in present) else None

    def current(self, box_id: int, path: str) -> Entry | None:
        with self._mutex:
            return self._present(box_id).get(path)

    def current_under(self, box_id: int, prefix: str) -> list[Entry]:
        with self._mutex:
            present = self._present(box_id)
            return [present[p] for p in sorted(present) if under(p, prefix)]

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        with self._mutex:
            return max((e.seq for e in self._visible(box_id) if e.seq > after and under(e.path, prefix)),
                       default=None)

    def head_under(self, box_id: int, prefix: str) -> int:
        with self._mutex:
            return max((h.rev for p, h in self.files[box_id].items() if under(p, prefix)), default=0)

    def count_under(self, box_id: int, prefix: str, cursor: int) -> int:
        with self._mutex:
            return sum(1 for e in self._visible(box_id) if e.seq > cursor and under(e.path, prefix))

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[CommitInfo]:
        with self._mutex:
            touched = {e.seq for e in self.journal[box_id] if under(e.path, prefix)}
        return self._commits(box_id, limit, before, touched.__contains__)

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[Entry], int]:
        with self._mutex:
            found = sorted((e for e in self.journal[box_id] if e.seq == seq and under(e.path, prefix)),
                           key=lambda e: e.path)
        return found[:limit], len(found)

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int:
        with self._mutex:
            link = Link(self._id(), token_hash, box_id, path, user_id, time.time(), expires, None)
            self.link_rows[link.id] = link
            return link.id

    def link(self, link_id: int) -> Link | None:
        return self.link_rows.get(link_id)

    def link_by_hash(self, token_hash: str) -> Link | None:
        with self._mutex:
            return next((k for k in self.link_rows.values() if k.token_hash == token_hash), None)

    def links_for(self, user_id: int, box_id: int | None) -> list[LinkListing]:
        with self._mutex:
            found = []
            for link in sorted(self.link_rows.values(), key=lambda k: k.id):
                box = self.boxes[link.box_id]
                if (link.user_id == user_id or box.owner_id == user_id) and box_id in (None, link.box_id):
                    found.append(LinkListing(link, box.name, box.owner, self.users[link.user_id].name))
            return found

    def revoke_link(self, link_id: int) -> None:
        with self._mutex:
            link = self.link_rows.get(link_id)
            if link is not None and link.revoked is None:
                self.link_rows[link_id] = dataclasses.replace(link, revoked=time.time())
