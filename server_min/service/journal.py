"""The journal as members read it: pages of changes after a cursor, acknowledgements, pending counts,
the box at any commit or time, and history. A member of one folder sees only that folder, with paths
relative to it, and heads and times counted over the commits that touched it."""

from __future__ import annotations

from typing import Any

from box_common.content import content_hash
from box_common.paths import InvalidPath, normalize_prefix
from server_min.errors import BadRequest, NotFound
from server_min.integrity import verified
from server_min.meta.base import MetaStore
from server_min.meta.records import Entry
from server_min.service.access import Caller, Rights
from server_min.service.accounts import Accounts
from server_min.service.changes import join, strip, visible


def entry_json(e: Entry, prefix: str) -> dict[str, Any]:
    """A journal entry as the answers show it to a member of folder `prefix`."""
    blocks = e.blocks
    return {
        "seq": e.seq, "path": strip(e.path, prefix), "op": e.op, "kind": e.kind, "size": e.size,
        "mtime_ns": e.mtime_ns, "mode": e.mode,
        "blocks": [blocks[i : i + 32].hex() for i in range(0, len(blocks), 32)],
        "content_hash": content_hash_of(e), "target": e.target,
    }


def content_hash_of(e: Entry) -> str:
    """An entry's content hash, computed from its blocks (or link target); '' for a deletion."""
    return content_hash(e.kind, e.blocks or b"", e.target) if e.op == "put" else ""


class Journal:
    """Reading the journal."""

    def __init__(self, meta: MetaStore, rights: Rights, accounts: Accounts) -> None:
        self.meta = meta
        self.rights = rights
        self.accounts = accounts

    def changes(self, caller: Caller, box_id: int, cursor: int, limit: int, folder: str = "") -> dict[str, Any]:
        """Journal entries after `cursor` (whole commits), within the caller's folder; the cursor is noted as
        the one of the caller's synced folder `folder`."""
        access = self.rights.access(caller, box_id)
        entries, upto = self.meta.changes(box_id, cursor, max(1, min(limit, 100_000)))
        entries = verified(entries)
        if caller.device_id is not None:
            self.meta.touch_device(caller.device_id, box_id, cursor, folder)
        head = self.meta.head(box_id)
        return {
            "entries": [entry_json(e, access.prefix) for e in entries if visible(e.path, access.prefix)],
            "cursor": upto,
            "head": head if not access.prefix else self.rights.head_after(access, cursor),
            "more": upto < head,
        }

    def ack(self, caller: Caller, box_id: int, device_id: int, cursor: int, folder: str = "") -> None:
        """Record that the synced folder `folder` of a device has applied the journal up to `cursor`."""
        self.rights.access(caller, box_id)
        self.accounts.check_device(caller, device_id)
        self.meta.touch_device(device_id, box_id, cursor, folder)

    def head(self, caller: Caller, box_id: int, cursor: int = 0) -> int:
        """The head a long poll compares with `cursor`; for a folder member, the last commit after `cursor`
        that touched its folder (else `cursor`), so commits elsewhere in the box neither wake nor show."""
        return self.rights.head_after(self.rights.access(caller, box_id), cursor)

    def pending(self, caller: Caller, box_id: int, cursor: int) -> dict[str, int]:
        """The head after `cursor` and how many changes come after it. Counted from the synced folder's own
        cursor, whoever made them: another folder of the same device makes changes this one must pull (the
        client leaves out the commits that folder made itself, which it knows)."""
        access = self.rights.access(caller, box_id)
        return {"head": self.rights.head_after(access, cursor), "waiting": self.rights.waiting(access, cursor)}

    def tree(self, caller: Caller, box_id: int, at: int | None, when: float | None, prefix: str) -> dict[str, Any]:
        """The box (or a folder of it) as it was at commit `at`, at time `when`, or now."""
        access = self.rights.access(caller, box_id)
        try:
            prefix = normalize_prefix(prefix)
        except InvalidPath as exc:
            raise BadRequest(str(exc)) from None
        scope = join(access.prefix, prefix)
        # A folder member's head, times and bounds count only the commits it may see (see Rights.seq_at).
        head = self.meta.head(box_id) if not access.prefix else self.rights.head(access)
        seq = head if at is None and when is None else (
            at if at is not None else self.rights.seq_at(access, when or 0))
        if seq < 0 or seq > head:
            raise NotFound(f"box has no commit {seq}; its head is {head}")
        entries = verified(self.meta.tree(box_id, seq, scope))
        return {"seq": seq, "head": head,
                "entries": [entry_json(e, access.prefix) for e in entries if visible(e.path, access.prefix)]}

    def log(self, caller: Caller, box_id: int, path: str | None, limit: int, before: int | None) -> dict[str, Any]:
        """Commits newest first, or every revision of one path (or folder), deletions included."""
        access = self.rights.access(caller, box_id)
        limit = max(1, min(limit, 10_000))
        if path:
            try:
                scope = join(access.prefix, normalize_prefix(path))
            except InvalidPath as exc:
                raise BadRequest(str(exc)) from None
            revisions = self.meta.path_history(box_id, scope, limit)
            verified(r.entry for r in revisions)
            return {"revisions": [
                {"rev": r.entry.seq, "path": strip(r.entry.path, access.prefix), "op": r.entry.op,
                 "kind": r.entry.kind, "size": r.entry.size, "content_hash": content_hash_of(r.entry),
                 "time": r.commit.time, "user": r.commit.user, "device": r.commit.device,
                 "message": r.commit.message}
                for r in revisions
            ]}
        commits = []
        listed = (self.meta.commits_under(box_id, access.prefix, limit, before) if access.prefix
                  else self.meta.commits(box_id, limit, before))
        for c in listed:
            if access.prefix:  # a folder member sees only the part of each commit inside its folder
                paths, count = self.meta.commit_paths_under(box_id, c.seq, access.prefix, 1000)
            else:
                paths, count = self.meta.commit_paths(box_id, c.seq, 1000), c.changes
            paths = verified(paths)
            # Each path's change in words, as status and push say it: a put of a path the box held before is
            # a modification, else an addition.
            held = self.meta.present_before(box_id, c.seq, [p.path for p in paths if p.op == "put"])
            commits.append({
                "seq": c.seq, "time": c.time, "user": c.user, "device": c.device, "message": c.message,
                "changes": count,
                "paths": [{"path": strip(p.path, access.prefix), "op": p.op, "kind": p.kind,
                           "change": "deleted" if p.op == "delete" else "modified" if p.path in held else "added"}
                          for p in paths],
            })
        return {"commits": commits}


__all__ = ["Journal", "content_hash_of", "entry_json"]
